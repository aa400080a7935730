//! Text from peers is data: before it is shown, control characters and bidirectional
//! overrides are escaped (so a message cannot fake the interface), and very long
//! messages are cut with a note.

/// Characters kept of one message in the window.
pub const MAX_SHOWN_CHARS: usize = 2000;

/// `text` made safe to show: `\n`, `\u{202e}` and the like written out as escapes,
/// cut after [`MAX_SHOWN_CHARS`] characters with a note saying how many were left out.
pub fn display_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 2));
    let total = text.chars().count();
    for (shown, c) in text.chars().enumerate() {
        if shown == MAX_SHOWN_CHARS {
            out.push_str(&format!(" … ({} more characters not shown)", total - shown));
            break;
        }
        if crate::protocol::is_unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `HH:MM:SS` (UTC) of a wall-clock timestamp in microseconds since the Unix epoch.
pub fn clock_utc(us: u64) -> String {
    let secs = us / 1_000_000 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `1.5 MB`, `320 KB`, … for byte counts.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(display_text("hi\nthere"), "hi\\nthere");
        assert_eq!(display_text("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(display_text("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(display_text("plain é ✓"), "plain é ✓");
    }

    #[test]
    fn long_messages_are_cut_with_a_note() {
        let shown = display_text(&"x".repeat(5000));
        assert!(shown.starts_with(&"x".repeat(MAX_SHOWN_CHARS)));
        assert!(
            shown.ends_with("(3000 more characters not shown)"),
            "{shown}"
        );
    }

    #[test]
    fn clock_and_sizes_read_well() {
        assert_eq!(
            clock_utc((13 * 3600 + 5 * 60 + 9) * 1_000_000u64),
            "13:05:09"
        );
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }
}
