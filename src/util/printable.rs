//! Untrusted text made safe to print.

/// `text` safe for a terminal or a log line: control characters (escapes, newlines, carriage
/// returns) are written as `\u{1b}`, `\n`…, so a name from Redis cannot forge lines or colours.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect::<String>()
            .into()
    } else {
        text.into()
    }
}
