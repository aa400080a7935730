//! The chat panel both windows show: messages with time and author (escaped: text is
//! data), and a line to type into.

use std::collections::VecDeque;

use super::text::{clock_utc, display_text};
use crate::protocol::Text;

/// Messages kept in the panel.
const MAX_LINES: usize = 500;

struct Line {
    time: String,
    from: String,
    body: String,
    ours: bool,
}

/// The chat's history and the message being typed.
#[derive(Default)]
pub struct Chat {
    lines: VecDeque<Line>,
    draft: String,
}

impl Chat {
    /// A message from a peer.
    pub fn received(&mut self, text: &Text) {
        self.push(Line {
            time: clock_utc(text.sent_us),
            from: display_text(&text.from),
            body: display_text(&text.body),
            ours: false,
        });
    }

    /// A message we sent (or a note about a transfer).
    pub fn note(&mut self, from: &str, body: &str, now_us: u64) {
        self.push(Line {
            time: clock_utc(now_us),
            from: display_text(from),
            body: display_text(body),
            ours: true,
        });
    }

    fn push(&mut self, line: Line) {
        if self.lines.len() == MAX_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// How many messages the panel holds.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Draws the panel; returns a message to send when the user sends one.
    pub fn chat_ui(&mut self, ui: &mut egui::Ui) -> Option<String> {
        ui.heading("Chat");
        let mut send = None;
        ui.horizontal(|ui| {
            let edit = ui.add(
                egui::TextEdit::singleline(&mut self.draft)
                    .hint_text("Message")
                    .desired_width(ui.available_width() - 60.0),
            );
            let entered = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if (ui.button("Send").clicked() || entered) && !self.draft.trim().is_empty() {
                send = Some(std::mem::take(&mut self.draft));
                edit.request_focus();
            }
        });
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .auto_shrink([false, false])
            .show(ui, |ui| {
                for line in &self.lines {
                    ui.horizontal_wrapped(|ui| {
                        ui.weak(&line.time);
                        if line.ours {
                            ui.strong(&line.from);
                        } else {
                            ui.label(
                                egui::RichText::new(&line.from)
                                    .strong()
                                    .color(ui.visuals().hyperlink_color),
                            );
                        }
                        ui.label(&line.body);
                    });
                }
            });
        send
    }
}
