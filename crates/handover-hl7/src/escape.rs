//! HL7 v2 delimiters (MSH-1/MSH-2) and escape-sequence encoding/decoding.
//!
//! HL7 v2 text carries no C0 control characters but the segment terminator: the MLLP
//! block bytes `0x0B` and `0x1C` among them would break the framing of whatever the text
//! is sent in. So [`escape`] never writes one (a tab is written as `\X09\`, a line feed
//! as `\.br\`, a carriage return as `\X0D\`, any other is left out), and [`unescape`]
//! never yields one but a tab, a line feed or a carriage return (a `\Xhh\` of another
//! is left out), which is also what the parser does with raw ones (see
//! [`Message::parse`](crate::Message::parse)).

use std::borrow::Cow;

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Separators {
    /// Field separator (MSH-1), normally `|`.
    pub field: char,
    /// Component separator (MSH-2 position 1), normally `^`.
    pub component: char,
    /// Repetition separator (MSH-2 position 2), normally `~`.
    pub repetition: char,
    /// Escape character (MSH-2 position 3), normally `\`.
    pub escape: char,
    /// Subcomponent separator (MSH-2 position 4), normally `&`.
    pub subcomponent: char,
    /// Truncation character (MSH-2 position 5, HL7 v2.7+), normally `#` when
    /// present; `None` when MSH-2 has only four characters.
    pub truncation: Option<char>,
}

impl Default for Separators {
    /// The standard `|^~\&` delimiters, without a truncation character.
    fn default() -> Self {
        Self {
            field: '|',
            component: '^',
            repetition: '~',
            escape: '\\',
            subcomponent: '&',
            truncation: None,
        }
    }
}

impl Separators {
    /// The MSH-2 value: component, repetition, escape and subcomponent
    /// characters, followed by the truncation character when there is one.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::with_capacity(5);
        s.push(self.component);
        s.push(self.repetition);
        s.push(self.escape);
        s.push(self.subcomponent);
        if let Some(t) = self.truncation {
            s.push(t);
        }
        s
    }

    /// Whether `c` is one of the delimiters or the escape character.
    pub fn is_special(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
            || Some(c) == self.truncation
    }
}

/// Escapes `text` for use as a single HL7 value (a field, component or
/// subcomponent) written with `seps`.
///
/// Delimiters become `\F\`, `\S\`, `\R\`, `\T\`, `\E\` (and `\P\` for the
/// truncation character), using the message's own escape character; a line
/// feed becomes `\.br\`; a carriage return becomes `\X0D\` (a raw `\r` would
/// end the segment) and a tab `\X09\`. Other C0 control characters are left
/// out: they cannot be carried in HL7 text (see the [module docs](self)). So
/// the result holds no C0 control character at all, and [`unescape`] reverses
/// this exactly for any text without those other controls.
pub fn escape(text: &str, seps: &Separators) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text, seps);
    out
}

/// [`escape`], appended to `out` (no allocation of its own).
pub fn escape_into(out: &mut String, text: &str, seps: &Separators) {
    if !text.contains(|c: char| seps.is_special(c) || c.is_ascii_control()) {
        out.push_str(text);
        return;
    }
    let e = seps.escape;
    for c in text.chars() {
        let code = if c == seps.field {
            "F"
        } else if c == seps.component {
            "S"
        } else if c == seps.repetition {
            "R"
        } else if c == seps.escape {
            "E"
        } else if c == seps.subcomponent {
            "T"
        } else if Some(c) == seps.truncation {
            "P"
        } else if c == '\n' {
            ".br"
        } else if c == '\r' {
            "X0D"
        } else if c == '\t' {
            "X09"
        } else if is_stray_control(c) {
            continue;
        } else {
            out.push(c);
            continue;
        };
        out.push(e);
        out.push_str(code);
        out.push(e);
    }
}

/// Whether `c` is a C0 control character HL7 text cannot carry: any but tab, line feed
/// and carriage return (DEL, 0x7F, is not a C0 control and is kept).
pub(crate) fn is_stray_control(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\n' | '\r')
}

/// Decodes the escape sequences in one HL7 value written with `seps`.
///
/// Recognised: `\F\ \S\ \T\ \R\ \E\` (and `\P\` when the message declares a
/// truncation character), `\Xhh..\` (hex bytes, read as UTF-8 when valid,
/// otherwise as ISO-8859-1; C0 control characters but tab, line feed and carriage
/// return left out), and `\.br\` (line break, decoded as `\n`).
///
/// Display-only sequences are dropped, their text kept: highlighting (`\H\` and `\N\`
/// around the highlighted text), the formatted-text commands that only lay text out
/// (`\.fi\`, `\.nf\`, `\.in±n\`, `\.ti±n\`), and character-set switches (`\Cxxyy\`,
/// `\Mxxyyzz\`, whose text arrives already decoded as UTF-8 or ISO-8859-1). The commands that
/// break lines (`\.sp\`, `\.sp n\`, `\.ce\`) become one line feed (`n` of them, at most 10,
/// for `\.sp n\`), and `\.sk n\` becomes `n` spaces (at most 10).
/// Anything else, including locally defined `\Z..\` sequences and an escape character
/// without a closing one, is kept literally.
pub fn unescape<'a>(text: &'a str, seps: &Separators) -> Cow<'a, str> {
    let e = seps.escape;
    if !text.contains(e) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(e) {
        out.push_str(&rest[..start]);
        let after = &rest[start + e.len_utf8()..];
        let Some(len) = after.find(e) else {
            // No closing escape character: keep the remainder as is.
            out.push_str(&rest[start..]);
            return Cow::Owned(out);
        };
        let seq = &after[..len];
        if !decode_sequence(seq, seps, &mut out) {
            out.push(e);
            out.push_str(seq);
            out.push(e);
        }
        rest = &after[len + e.len_utf8()..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Appends the decoding of one escape sequence body to `out`; returns false
/// (appending nothing) if the sequence is not recognised.
fn decode_sequence(seq: &str, seps: &Separators, out: &mut String) -> bool {
    let c = match seq {
        "F" => seps.field,
        "S" => seps.component,
        "T" => seps.subcomponent,
        "R" => seps.repetition,
        "E" => seps.escape,
        "P" => match seps.truncation {
            Some(t) => t,
            None => return false,
        },
        ".br" => '\n',
        "H" | "N" | ".fi" | ".nf" | ".ce" => {
            if seq == ".ce" {
                out.push('\n');
            }
            return true;
        }
        _ if is_charset_switch(seq) => return true,
        _ if seq.starts_with('.') => return format_command(seq, out),
        _ => {
            return match seq.strip_prefix('X').and_then(decode_hex) {
                Some(bytes) => {
                    let bytes: Vec<u8> = bytes
                        .into_iter()
                        .filter(|&b| !is_stray_control(char::from(b)))
                        .collect();
                    match String::from_utf8(bytes) {
                        Ok(s) => out.push_str(&s),
                        Err(err) => out.extend(err.as_bytes().iter().map(|&b| char::from(b))),
                    }
                    true
                }
                None => false,
            };
        }
    };
    out.push(c);
    true
}

/// `Cxxyy` (a single-byte character-set switch) or `Mxxyyzz` (a multi-byte one), `xx` to
/// `zz` hex digits.
fn is_charset_switch(seq: &str) -> bool {
    let hex = match seq.as_bytes().first() {
        Some(b'C') if seq.len() == 5 => &seq[1..],
        Some(b'M') if seq.len() == 5 || seq.len() == 7 => &seq[1..],
        _ => return false,
    };
    hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The formatted-text commands with an argument (HL7 v2 2.A.30 FT): `.sp n` (n line feeds),
/// `.sk n` (n spaces), `.in ±n` and `.ti ±n` (indents, dropped). False when `seq` is none
/// of them.
fn format_command(seq: &str, out: &mut String) -> bool {
    let Some((cmd, arg)) = seq.split_at_checked(3) else {
        return false;
    };
    let arg = arg.trim();
    let count = |signed: bool| -> Option<usize> {
        let digits = if signed {
            arg.strip_prefix(['+', '-']).unwrap_or(arg)
        } else {
            arg.strip_prefix('+').unwrap_or(arg)
        };
        if digits.is_empty() {
            return Some(1);
        }
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse::<usize>().unwrap_or(usize::MAX).min(10))
    };
    match cmd {
        ".sp" => count(false).map(|n| out.extend(std::iter::repeat_n('\n', n))),
        ".sk" => count(false).map(|n| out.extend(std::iter::repeat_n(' ', n))),
        ".in" | ".ti" => count(true).map(|_| ()),
        _ => None,
    }
    .is_some()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn un(s: &str) -> String {
        unescape(s, &Separators::default()).into_owned()
    }

    #[test]
    fn standard_sequences() {
        assert_eq!(un(r"a\F\b\S\c\T\d\R\e\E\f"), r"a|b^c&d~e\f");
        assert_eq!(un(r"line1\.br\line2"), "line1\nline2");
        assert_eq!(un(r"\X41\\XC3A9\\XE9\"), "Aéé");
        assert_eq!(un(r"\X0D0A\"), "\r\n");
    }

    #[test]
    fn display_only_sequences_keep_their_text() {
        assert_eq!(un(r"\H\bold\N\ text"), "bold text");
        assert_eq!(
            un(r"one\.sp\two\.sp 2\three\.ce\four"),
            "one\ntwo\n\nthree\nfour"
        );
        assert_eq!(un(r"\.in+4\\.ti-2\\.fi\\.nf\a\.sk 3\b"), "a   b");
        assert_eq!(un(r"\C2842\Ren\C2D41\ée\M2442\"), "Renée");
        assert_eq!(un(r"\.sp 99999999999999999999\"), "\n".repeat(10));
    }

    #[test]
    fn unknown_and_broken_sequences_are_literal() {
        assert_eq!(un(r"\Zlocal\"), r"\Zlocal\");
        assert_eq!(un(r"C:\Cache\x"), r"C:\Cache\x");
        assert_eq!(un(r"\.spx\"), r"\.spx\");
        assert_eq!(un(r"\.xx\"), r"\.xx\");
        assert_eq!(un(r"C:\temp"), r"C:\temp");
        assert_eq!(un(r"\X4\"), r"\X4\");
        assert_eq!(un(r"\XZZ\"), r"\XZZ\");
        assert_eq!(un(r"\P\"), r"\P\");
        assert_eq!(un(r"a\\b"), r"a\\b");
    }

    #[test]
    fn truncation_character() {
        let seps = Separators {
            truncation: Some('#'),
            ..Separators::default()
        };
        assert_eq!(escape("a#b", &seps), r"a\P\b");
        assert_eq!(unescape(r"a\P\b", &seps), "a#b");
        assert_eq!(seps.encoding_characters(), r"^~\&#");
    }

    #[test]
    fn escape_examples() {
        let seps = Separators::default();
        assert_eq!(
            escape("O'Neil & Sons | ^~\\\r\n", &seps),
            r"O'Neil \T\ Sons \F\ \S\\R\\E\\X0D\\.br\"
        );
    }

    #[test]
    fn control_characters_are_never_written_nor_decoded() {
        let seps = Separators::default();
        // MLLP's block bytes and other C0 controls are left out; a tab is escaped.
        assert_eq!(
            escape("A\u{0B}B\u{1C}C\u{0}D\tE\u{7F}", &seps),
            "ABCD\\X09\\E\u{7F}"
        );
        assert_eq!(un(r"A\X0B\B\X001C\C\X09\D\X0D0A\"), "ABC\tD\r\n");
        assert_eq!(un(r"\X00\"), "");
    }

    #[test]
    fn no_escape_char_borrows() {
        assert!(matches!(
            unescape("plain", &Separators::default()),
            Cow::Borrowed("plain")
        ));
    }
}
