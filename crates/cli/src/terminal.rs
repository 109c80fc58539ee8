//! Text from a vault or a server made safe to print.

use std::borrow::Cow;

/// `text` made safe to print on a terminal: every control character (C0,
/// DEL, C1: escape sequences, bells, backspaces, carriage returns, line
/// breaks) is removed, so a title or message written on another device (or
/// imported) cannot rewrite the screen, the window title or the clipboard.
/// Everything the CLI prints from a vault or a server goes through it;
/// JSON output escapes control characters on its own.
pub fn terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter(|c| !c.is_control()).collect())
}

#[cfg(test)]
mod tests {
    use super::terminal;

    #[test]
    fn terminal_text_keeps_printable_text_and_drops_every_control_character() {
        assert_eq!(terminal("plain, ünïcode ✓"), "plain, ünïcode ✓");
        assert_eq!(
            terminal("a\u{1b}]0;t\u{7}b\u{1b}[2Jc\u{9b}1md\r\n\u{8}\u{7f}e\tf"),
            "a]0;tb[2Jc1mdef"
        );
    }
}
