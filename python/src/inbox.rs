//! What the node reported that Python asks for later — texts, received files, the last
//! failed handshake — kept in bounded lists until taken (the oldest go first when full).

use std::collections::VecDeque;
use std::path::PathBuf;

use texstream::net::{Event, HandshakeFailure, MAX_QUEUED_TEXT_BYTES};
use texstream::protocol::GoodbyeCode;

/// Texts or files kept at most, each, until Python takes them.
pub const KEPT: usize = 1024;

pub struct Text {
    pub from: String,
    pub body: String,
    pub sent_us: u64,
}

pub struct ReceivedFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
}

/// A handshake that failed, and whether a token was the reason.
pub struct Failure {
    pub auth: bool,
    pub message: String,
}

#[derive(Default)]
pub struct Inbox {
    pub texts: VecDeque<Text>,
    text_bytes: u64,
    /// Texts let go because Python did not take them in time.
    pub texts_dropped: u64,
    pub files: VecDeque<ReceivedFile>,
    /// The last failed handshake not yet reported.
    pub failure: Option<Failure>,
}

impl Inbox {
    pub fn take(&mut self, event: Event) {
        match event {
            Event::Text { text, .. } => {
                self.text_bytes += (text.body.len() + text.from.len()) as u64;
                self.texts.push_back(Text {
                    from: text.from,
                    body: text.body,
                    sent_us: text.sent_us,
                });
                while self.texts.len() > KEPT || self.text_bytes > MAX_QUEUED_TEXT_BYTES {
                    let Some(old) = self.texts.pop_front() else {
                        break;
                    };
                    self.text_bytes -= (old.body.len() + old.from.len()) as u64;
                    self.texts_dropped += 1;
                }
            }
            Event::FileReceived {
                name, path, size, ..
            } => {
                if self.files.len() == KEPT {
                    self.files.pop_front();
                }
                self.files.push_back(ReceivedFile { name, path, size });
            }
            Event::HandshakeFailed { addr, reason } => {
                let auth = matches!(
                    reason,
                    HandshakeFailure::AuthFailed(_)
                        | HandshakeFailure::RefusedByPeer {
                            code: GoodbyeCode::AuthFailed,
                            ..
                        }
                );
                self.failure = Some(Failure {
                    auth,
                    message: format!("{reason}, with {addr}"),
                });
            }
            _ => {}
        }
    }

    pub fn take_texts(&mut self) -> Vec<Text> {
        self.text_bytes = 0;
        self.texts.drain(..).collect()
    }
}
