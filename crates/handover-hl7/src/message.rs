//! HL7 v2 message model and parser (v2.3 – v2.5.1, tolerant of later versions).
//!
//! A [`Message`] is a list of [`Segment`]s; a segment has [`Field`]s, a field
//! has [`Repetition`]s, a repetition has [`Component`]s and a component has
//! subcomponents. All numbering is 1-based and follows the standard, so for
//! `MSH` field 1 is the field separator itself and field 2 the encoding
//! characters (MSH-9 is the message type, MSH-10 the control id, ...).
//!
//! Parsing splits segments into fields and keeps one copy of the message's
//! text; a field's repetitions, components and subcomponents are split, and
//! their escape sequences resolved (see [`unescape`]), the first time they are
//! asked for, once. The wire text of each field, repetition and component is
//! available as `raw()`.
//!
//! Input handling (see [`Message::parse`]): a UTF-8 BOM, surrounding
//! whitespace and stray MLLP block characters are ignored; segments may be
//! terminated by `\r`, `\n` or `\r\n` in any mix; blank lines are skipped,
//! as is whitespace at the start of a segment; a line after a bare `\n` that does not
//! start like a segment (three letters or digits, then the field separator, or an empty
//! segment's name alone: three upper-case letters or digits) is a line break inside the
//! previous segment's last field, and kept there;
//! bytes that are not valid UTF-8 are decoded as ISO-8859-1.
//!
//! C0 control characters other than tab, `\r` and `\n` (NUL, the MLLP block bytes
//! `0x0B` and `0x1C`, ...) are dropped wherever they occur, and a `\Xhh\` escape of one
//! decodes to nothing (see [`unescape`]): HL7 v2 text cannot carry them, they come from
//! broken senders or bridges, and kept they would end up in stored names and, echoed,
//! inside the MLLP frame of an ACK. Dropping them is the liberal choice: a name with a NUL
//! in it is still the name, and refusing the message would lose the admission it reports.
//! So no value read from a [`Message`] holds one.
//!
//! An input that starts with a batch header (`FHS` or `BHS`) is not one message:
//! [`ParseError::Batch`].
//!
//! The HL7 "explicit null" value `""` is not interpreted: it reads back as the
//! two-character string `""`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use crate::escape::{is_stray_control, unescape, Separators};

/// A piece of a message's text: a range of the message's one copy of its text
/// or, for a value whose escape sequences were decoded, a string of its own.
#[derive(Clone)]
pub struct Text(Repr);

#[derive(Clone)]
enum Repr {
    Shared(Arc<str>, usize, usize),
    Owned(Box<str>),
}

impl Text {
    fn whole(buf: &Arc<str>) -> Text {
        Text(Repr::Shared(Arc::clone(buf), 0, buf.len()))
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Shared(buf, start, end) => buf.get(*start..*end).unwrap_or_default(),
            Repr::Owned(s) => s,
        }
    }

    /// `part`, a slice of this text, as a text sharing the same copy (a copy of
    /// its own when `part` is not a slice of it).
    fn slice(&self, part: &str) -> Text {
        if let Repr::Shared(buf, ..) = &self.0 {
            let base = buf.as_ptr() as usize;
            let at = part.as_ptr() as usize;
            if at >= base && at + part.len() <= base + buf.len() {
                let start = at - base;
                return Text(Repr::Shared(Arc::clone(buf), start, start + part.len()));
            }
        }
        Text(Repr::Owned(part.into()))
    }

    /// `part`, a slice of this text, with its escape sequences decoded.
    fn decoded(&self, part: &str, seps: &Separators) -> Text {
        match unescape(part, seps) {
            Cow::Borrowed(b) => self.slice(b),
            Cow::Owned(o) => Text(Repr::Owned(o.into_boxed_str())),
        }
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Errors from [`Message::parse`] and [`Message::parse_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input held nothing but whitespace.
    #[error("message is empty")]
    Empty,
    /// The first segment is not `MSH`.
    #[error("message does not start with an MSH segment")]
    MissingMsh,
    /// The input is an HL7 batch (a file `FHS` or batch `BHS` header, the messages, then
    /// `BTS`/`FTS` trailers), not a single message.
    #[error("input is an HL7 batch (it starts with {header}), not a single message")]
    Batch {
        /// The header segment found first: `FHS` or `BHS`.
        header: &'static str,
    },
    /// MSH-1 is missing or not usable as a field separator.
    #[error(
        "invalid field separator in MSH-1: found {}",
        found.map_or_else(|| "end of segment".to_owned(), |c| format!("{c:?}"))
    )]
    InvalidFieldSeparator {
        /// The character found after `MSH` (`None` if the segment ends there).
        found: Option<char>,
    },
    /// MSH-2 is not 4 or 5 distinct delimiter characters.
    #[error("invalid encoding characters {found:?} in MSH-2: {reason}")]
    InvalidEncodingCharacters {
        /// The MSH-2 text found.
        found: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A segment's name is not three ASCII letters or digits.
    #[error("invalid segment name {name:?} on segment {segment}")]
    InvalidSegmentName {
        /// 1-based index of the offending segment (blank lines not counted).
        segment: usize,
        /// The text found where the segment name should be.
        name: String,
    },
}

/// How the input bytes were turned into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextEncoding {
    /// The input was valid UTF-8 (this includes plain ASCII).
    Utf8,
    /// The input was not valid UTF-8: each byte that is not part of a valid UTF-8 sequence
    /// was decoded as Windows-1252 (ISO-8859-1 but for 0x80–0x9F), see
    /// [`utf8_or_windows_1252`].
    Windows1252,
}

/// Bytes as text: as UTF-8 where they are valid UTF-8, and each byte that is not as its
/// [Windows-1252](windows_1252) character; borrowed when all of it is UTF-8.
///
/// One byte of Windows-1252 (an `O’BRIEN` pasted from Word into a UTF-8 export, or two
/// sources' lines put together) does not make every UTF-8 character of the rest
/// mojibake (`Zoë` as `ZoÃ«`); and text that is all Windows-1252 reads as before, since
/// its bytes above 0x7F are almost never valid UTF-8 sequences (a letter after `Ã`).
pub fn utf8_or_windows_1252(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut text = String::with_capacity(bytes.len() + bytes.len() / 8);
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        text.extend(chunk.invalid().iter().map(|&b| windows_1252(b)));
    }
    std::borrow::Cow::Owned(text)
}

/// A Windows-1252 byte as its character: ISO-8859-1 except 0x80–0x9F, where Windows-1252
/// has the euro sign, curly quotes, dashes and the like (WHATWG's table; its five unused
/// bytes map to the C1 controls, as browsers decode them).
pub fn windows_1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// One component: its wire text and its decoded subcomponents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    raw: Text,
    subcomponents: Vec<Text>,
}

impl Component {
    /// The component's text as received (escape sequences not decoded).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The decoded subcomponents; always at least one (possibly empty).
    pub fn subcomponents(&self) -> &[Text] {
        &self.subcomponents
    }

    /// Subcomponent `n` (1-based), decoded.
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        self.subcomponents.get(n.checked_sub(1)?).map(Text::as_str)
    }

    /// The decoded first subcomponent, which is the whole component when it
    /// has no subcomponent separators.
    pub fn value(&self) -> &str {
        self.subcomponents.first().map_or("", Text::as_str)
    }
}

/// One repetition of a field: its wire text and its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    raw: Text,
    components: Vec<Component>,
}

impl Repetition {
    /// The repetition's text as received (escape sequences not decoded).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The components; always at least one.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.components.get(n.checked_sub(1)?)
    }

    /// The decoded first subcomponent of the first component.
    pub fn value(&self) -> &str {
        self.components.first().map_or("", Component::value)
    }
}

/// One field: its wire text and its repetitions (split when first asked for).
#[derive(Clone)]
pub struct Field {
    raw: Text,
    separators: Separators,
    repetitions: OnceLock<Vec<Repetition>>,
}

impl fmt::Debug for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Field")
            .field("raw", &self.raw)
            .field("repetitions", &self.repetitions())
            .finish()
    }
}

/// Fields are equal when their text and separators are: the rest follows.
impl PartialEq for Field {
    fn eq(&self, other: &Field) -> bool {
        self.raw == other.raw && self.separators == other.separators
    }
}

impl Eq for Field {}

impl Field {
    /// The field's text as received (escape sequences not decoded).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether the field is empty (no text at all).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The repetitions; empty when the field is empty.
    pub fn repetitions(&self) -> &[Repetition] {
        self.repetitions.get_or_init(|| self.split())
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        self.repetitions().get(n.checked_sub(1)?)
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.repetition(1)?.component(n)
    }

    /// The decoded first subcomponent of the first component of the first
    /// repetition (`""` for an empty field).
    pub fn value(&self) -> &str {
        self.repetitions().first().map_or("", Repetition::value)
    }

    fn parse(raw: Text, separators: Separators) -> Self {
        Self {
            raw,
            separators,
            repetitions: OnceLock::new(),
        }
    }

    /// The repetitions, components and decoded subcomponents of the text.
    fn split(&self) -> Vec<Repetition> {
        let (raw, seps) = (&self.raw, &self.separators);
        if raw.is_empty() {
            return Vec::new();
        }
        raw.split(seps.repetition)
            .map(|rep| Repetition {
                raw: raw.slice(rep),
                components: rep
                    .split(seps.component)
                    .map(|comp| Component {
                        raw: raw.slice(comp),
                        subcomponents: comp
                            .split(seps.subcomponent)
                            .map(|sub| raw.decoded(sub, seps))
                            .collect(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// A field whose text is taken literally (MSH-1 and MSH-2).
    fn literal(raw: Text, separators: Separators) -> Self {
        let repetitions = vec![Repetition {
            raw: raw.clone(),
            components: vec![Component {
                raw: raw.clone(),
                subcomponents: vec![raw.clone()],
            }],
        }];
        Self {
            raw,
            separators,
            repetitions: OnceLock::from(repetitions),
        }
    }
}

/// One segment: its name and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    name: Text,
    raw: Text,
    fields: Vec<Field>,
}

impl Segment {
    /// The three-character segment name, e.g. `PID` or `ZU1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's text as received, without its terminator.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// All fields, in order: `fields()[0]` is field 1.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Field `n` (1-based, standard numbering: for `MSH`, field 1 is the
    /// field separator and field 2 the encoding characters). `None` if the
    /// segment has fewer fields.
    pub fn field(&self, n: usize) -> Option<&Field> {
        self.fields.get(n.checked_sub(1)?)
    }
}

/// A parsed HL7 v2 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    separators: Separators,
    encoding: TextEncoding,
    segments: Vec<Segment>,
}

/// Segments whose field 1 is the field separator and field 2 the encoding
/// characters.
fn is_header(name: &str) -> bool {
    matches!(name, "MSH" | "BHS" | "FHS")
}

/// Characters ignored around the message: whitespace and MLLP block bytes.
fn is_padding(c: char) -> bool {
    c.is_whitespace() || c == '\u{0B}' || c == '\u{1C}' || c == '\u{FEFF}'
}

/// Whether `line` starts like a segment: three letters or digits, then the field separator;
/// or is an empty segment's name alone, three upper-case letters or digits (`PD1`: trailing
/// delimiters may be left out, so a segment with no fields is its name). Lower case is not
/// enough for the name alone: `Dog` on a line of its own is more likely a note's last word.
fn starts_segment(line: &str, field: char) -> bool {
    let line = line.trim();
    let mut chars = line.chars();
    if !(0..3).all(|_| chars.next().is_some_and(|c| c.is_ascii_alphanumeric())) {
        return false;
    }
    match chars.next() {
        Some(c) => c == field,
        None => line
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
    }
}

/// The segments of a message's text, each a slice of it. Segments end at `\r` (the
/// standard's terminator), `\n` or `\r\n`; blank lines are skipped. A line that follows a
/// bare `\n` and does not start like a segment continues the segment before it: a line
/// break inside a free-text field (a note, an address) is kept as part of the field rather
/// than read as a segment with an invalid name.
fn segment_lines<'t>(text: &'t str, field: char) -> impl Iterator<Item = &'t str> + 't {
    let bytes = text.as_bytes();
    let mut lines = Vec::<(usize, usize)>::new();
    let mut start = 0;
    while start <= text.len() {
        let end = text[start..]
            .find(['\r', '\n'])
            .map_or(text.len(), |i| start + i);
        let line = &text[start..end];
        // The terminator before this line: a bare `\n` (not the end of `\r\n`)?
        let after_bare_lf =
            start > 0 && bytes[start - 1] == b'\n' && (start < 2 || bytes[start - 2] != b'\r');
        if !line.trim().is_empty() {
            match lines.last_mut() {
                Some(last) if after_bare_lf && !starts_segment(line, field) => last.1 = end,
                _ => lines.push((start, end)),
            }
        }
        start = end + 1;
    }
    lines.into_iter().map(move |(s, e)| &text[s..e])
}

fn valid_delimiter(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

impl Message {
    /// Parses a message from bytes.
    ///
    /// The bytes are decoded as UTF-8 when valid; otherwise each byte is read
    /// as a Windows-1252 character, which is what older PAS systems send
    /// (ISO-8859-1, as MSH-18 `8859/1` says, or Windows' superset of it with
    /// curly quotes in 0x80–0x9F, as in `O’BRIEN`; see
    /// [`Message::text_encoding`]). MSH-18 is not consulted. A UTF-8 BOM is
    /// ignored. C0 control characters other than tab, `\r` and `\n` are dropped (see the
    /// [module docs](self)).
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match utf8_or_windows_1252(bytes) {
            std::borrow::Cow::Borrowed(text) => Self::parse_text(text, TextEncoding::Utf8),
            std::borrow::Cow::Owned(text) => Self::parse_text(&text, TextEncoding::Windows1252),
        }
    }

    /// Parses a message that is already text.
    pub fn parse_str(text: &str) -> Result<Self, ParseError> {
        Self::parse_text(text, TextEncoding::Utf8)
    }

    fn parse_text(text: &str, encoding: TextEncoding) -> Result<Self, ParseError> {
        let cleaned;
        // A byte below 0x20 is an ASCII character in UTF-8: a byte scan finds them all.
        let text = if text.bytes().any(|b| is_stray_control(char::from(b))) {
            cleaned = text.replace(is_stray_control, "");
            cleaned.as_str()
        } else {
            text
        };
        let text = Text::whole(&Arc::from(text.trim_matches(is_padding)));
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let Some(after_msh) = text.strip_prefix("MSH") else {
            return Err(
                match ["FHS", "BHS"].into_iter().find(|h| text.starts_with(h)) {
                    Some(header) => ParseError::Batch { header },
                    None => ParseError::MissingMsh,
                },
            );
        };
        let separators = Self::read_separators(after_msh)?;
        let segments = segment_lines(&text, separators.field)
            .enumerate()
            .map(|(i, line)| Self::parse_segment(i + 1, text.slice(line.trim_start()), &separators))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            separators,
            encoding,
            segments,
        })
    }

    fn read_separators(after_msh: &str) -> Result<Separators, ParseError> {
        let mut chars = after_msh.chars();
        let field = match chars.next() {
            Some(c) if valid_delimiter(c) => c,
            found => return Err(ParseError::InvalidFieldSeparator { found }),
        };
        let enc: String = chars
            .take_while(|&c| c != field && c != '\r' && c != '\n')
            .collect();
        let bad = |reason| ParseError::InvalidEncodingCharacters {
            found: enc.clone(),
            reason,
        };
        let list: Vec<char> = enc.chars().collect();
        if !(4..=5).contains(&list.len()) {
            return Err(bad("expected 4 or 5 characters"));
        }
        if !list.iter().all(|&c| valid_delimiter(c)) {
            return Err(bad(
                "delimiters must not be letters, digits, whitespace or controls",
            ));
        }
        let mut all = list.clone();
        all.push(field);
        all.sort_unstable();
        all.dedup();
        if all.len() != list.len() + 1 {
            return Err(bad("delimiters must all be different"));
        }
        Ok(Separators {
            field,
            component: list[0],
            repetition: list[1],
            escape: list[2],
            subcomponent: list[3],
            truncation: list.get(4).copied(),
        })
    }

    fn parse_segment(index: usize, line: Text, seps: &Separators) -> Result<Segment, ParseError> {
        let (name, rest) = match line.split_once(seps.field) {
            Some((name, rest)) => (name, Some(rest)),
            None => (line.as_str(), None),
        };
        if name.len() != 3 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ParseError::InvalidSegmentName {
                segment: index,
                name: name.chars().take(16).collect(),
            });
        }
        let mut fields = Vec::new();
        if let Some(rest) = rest {
            let mut pieces = rest.split(seps.field);
            if is_header(name) {
                // MSH-1 is the field separator between the name and MSH-2.
                let sep = line.slice(&line[name.len()..name.len() + seps.field.len_utf8()]);
                fields.push(Field::literal(sep, *seps));
                if let Some(enc) = pieces.next() {
                    fields.push(Field::literal(line.slice(enc), *seps));
                }
            }
            fields.extend(pieces.map(|raw| Field::parse(line.slice(raw), *seps)));
        }
        Ok(Segment {
            name: line.slice(name),
            raw: line.clone(),
            fields,
        })
    }

    /// The delimiters declared in MSH-1 and MSH-2.
    pub fn separators(&self) -> &Separators {
        &self.separators
    }

    /// How the input bytes were decoded into text.
    pub fn text_encoding(&self) -> TextEncoding {
        self.encoding
    }

    /// All segments in order; the first is always `MSH`.
    pub fn all_segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment called `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name.as_str() == name)
    }

    /// All segments called `name`, in order.
    pub fn segments<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments
            .iter()
            .filter(move |s| s.name.as_str() == name)
    }

    /// The decoded value at an HL7 path such as `PV1-3.1`, `PID-3[2].4` or
    /// `OBX[2]-5` (see [`Path`]); `None` if absent or empty, and also if
    /// `path` is not a valid path (use [`Path::from_str`] plus
    /// [`Message::get_path`] to tell those apart).
    pub fn get(&self, path: &str) -> Option<&str> {
        self.get_path(&path.parse().ok()?)
    }

    /// The decoded value at `path`; `None` if absent or empty.
    pub fn get_path(&self, path: &Path) -> Option<&str> {
        let value = self
            .segments
            .iter()
            .filter(|s| s.name.as_str() == path.segment)
            .nth(path.segment_index - 1)?
            .field(path.field)?
            .repetition(path.repetition)?
            .component(path.component)?
            .subcomponent(path.subcomponent)?;
        (!value.is_empty()).then_some(value)
    }

    /// MSH-9.1, the message type (e.g. `ADT`).
    pub fn message_type(&self) -> Option<&str> {
        self.header_value(9, 1)
    }

    /// MSH-9.2, the trigger event (e.g. `A01`).
    pub fn trigger_event(&self) -> Option<&str> {
        self.header_value(9, 2)
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> Option<&str> {
        self.header_value(10, 1)
    }

    /// MSH-12.1, the version id (e.g. `2.4`).
    pub fn version(&self) -> Option<&str> {
        self.header_value(12, 1)
    }

    /// `MSH-field.component` as [`Message::get`] reads it, without parsing a [`Path`]
    /// (these are read for every message an MLLP connection carries).
    pub fn header_value(&self, field: usize, component: usize) -> Option<&str> {
        let value = self
            .segment("MSH")?
            .field(field)?
            .repetition(1)?
            .component(component)?
            .subcomponent(1)?;
        (!value.is_empty()).then_some(value)
    }
}

/// Errors from parsing a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not match `SEG[n]-field[n].component.subcomponent`.
    #[error("invalid hl7 path {path:?}: {reason}")]
    Invalid {
        /// The path text.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A location in a message: `SEG[s]-F[r].C.S`, all numbers 1-based.
///
/// Only the segment name and field number are required; the segment
/// occurrence `[s]`, repetition `[r]`, component `C` and subcomponent `S`
/// default to 1. Examples: `MSH-9.2`, `PID-3[2].4`, `PV1-3.1`, `OBX[2]-5.1.2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    /// Segment name.
    pub segment: String,
    /// Which occurrence of the segment (1-based).
    pub segment_index: usize,
    /// Field number (1-based).
    pub field: usize,
    /// Field repetition (1-based).
    pub repetition: usize,
    /// Component (1-based).
    pub component: usize,
    /// Subcomponent (1-based).
    pub subcomponent: usize,
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(path: &str) -> Result<Self, Self::Err> {
        let err = |reason| PathError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let (seg_part, rest) = path
            .split_once('-')
            .ok_or_else(|| err("expected '-' after the segment name"))?;
        let (segment, segment_index) = split_index(seg_part).ok_or_else(|| err("bad segment"))?;
        if segment.len() != 3 || !segment.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("segment name must be three letters or digits"));
        }
        let mut parts = rest.split('.');
        let (field, repetition) = parts
            .next()
            .and_then(split_index)
            .ok_or_else(|| err("bad field"))?;
        let field = number(field).ok_or_else(|| err("field must be a positive number"))?;
        let mut next_number = |what| match parts.next() {
            None => Ok(1),
            Some(p) => number(p).ok_or_else(|| err(what)),
        };
        let component = next_number("component must be a positive number")?;
        let subcomponent = next_number("subcomponent must be a positive number")?;
        if parts.next().is_some() {
            return Err(err("too many parts"));
        }
        Ok(Self {
            segment: segment.to_owned(),
            segment_index,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

/// Splits `name[n]` into `(name, n)`; `name` alone gives `(name, 1)`.
fn split_index(s: &str) -> Option<(&str, usize)> {
    match s.strip_suffix(']') {
        None => Some((s, 1)),
        Some(s) => {
            let (name, idx) = s.split_once('[')?;
            Some((name, number(idx)?))
        }
    }
}

fn number(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn path_parsing() {
        let p: Path = "PID-3[2].4".parse().unwrap();
        assert_eq!(
            (
                p.segment.as_str(),
                p.segment_index,
                p.field,
                p.repetition,
                p.component,
                p.subcomponent
            ),
            ("PID", 1, 3, 2, 4, 1)
        );
        let p: Path = "OBX[2]-5.1.2".parse().unwrap();
        assert_eq!(
            (p.segment_index, p.field, p.component, p.subcomponent),
            (2, 5, 1, 2)
        );
        for bad in [
            "PID",
            "PID-",
            "PID-0",
            "PID-x",
            "PI-3",
            "PID-3.0",
            "PID-3.1.1.1",
            "PID[0]-3",
            "PID-3[",
            "PID-3[]",
            "PID-3.-1",
        ] {
            assert!(bad.parse::<Path>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn header_values_read_as_the_paths_do() {
        for text in [
            "MSH|^~\\&|PAS|RX1|||20261123||ADT^A03^ADT_A03|C1|P|2.4^GBR\rEVN|A03\r",
            "MSH|^~\\&|||||||ADT~ORU^X|C\\F\\2&z||2.5.1\r",
            "MSH*:#!@*A*B*C*D*E**ADT:A08:X*C3*P*\r",
            "MSH|^~\\&\r",
            "MSH|^~\\&|||||||^A01|\"\"\r",
        ] {
            let m = Message::parse_str(text).unwrap();
            for (field, component) in [(9, 1), (9, 2), (9, 3), (10, 1), (12, 1), (12, 2), (3, 1)] {
                assert_eq!(
                    m.header_value(field, component),
                    m.get(&format!("MSH-{field}.{component}")),
                    "{text} MSH-{field}.{component}"
                );
            }
            assert_eq!(m.trigger_event(), m.get("MSH-9.2"));
            assert_eq!(m.control_id(), m.get("MSH-10"));
        }
    }

    #[test]
    fn msh_numbering() {
        let m =
            Message::parse_str("MSH|^~\\&|APP|FAC|RAPP|RFAC|20240101||ADT^A01^ADT_A01|C1|P|2.4")
                .unwrap();
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.field(1).unwrap().raw(), "|");
        assert_eq!(msh.field(2).unwrap().raw(), "^~\\&");
        assert_eq!(m.get("MSH-2"), Some("^~\\&"));
        assert_eq!(msh.field(3).unwrap().value(), "APP");
        assert_eq!(m.message_type(), Some("ADT"));
        assert_eq!(m.trigger_event(), Some("A01"));
        assert_eq!(m.get("MSH-9.3"), Some("ADT_A01"));
        assert_eq!(m.control_id(), Some("C1"));
        assert_eq!(m.version(), Some("2.4"));
        assert_eq!(msh.field(0), None);
        assert_eq!(msh.field(13), None);
    }

    #[test]
    fn rejects() {
        assert_eq!(Message::parse(b"  \r\n"), Err(ParseError::Empty));
        assert_eq!(Message::parse(b"PID|1"), Err(ParseError::MissingMsh));
        assert_eq!(
            Message::parse(b"MSH"),
            Err(ParseError::InvalidFieldSeparator { found: None })
        );
        assert_eq!(
            Message::parse(b"MSHA^~\\&"),
            Err(ParseError::InvalidFieldSeparator { found: Some('A') })
        );
        assert!(matches!(
            Message::parse(b"MSH|^~\\|"),
            Err(ParseError::InvalidEncodingCharacters { .. })
        ));
        assert!(matches!(
            Message::parse(b"MSH|^~^&|"),
            Err(ParseError::InvalidEncodingCharacters { .. })
        ));
        assert!(matches!(
            Message::parse(b"MSH|^~\\&|\rfree text|x"),
            Err(ParseError::InvalidSegmentName { segment: 2, .. })
        ));
        assert_eq!(
            ParseError::InvalidSegmentName {
                segment: 2,
                name: "free text".into()
            }
            .to_string(),
            "invalid segment name \"free text\" on segment 2"
        );
    }

    #[test]
    fn a_bare_line_feed_inside_a_field_is_part_of_it() {
        let m = Message::parse(
            b"MSH|^~\\&|PAS|RX1|||20261120||ADT^A01|1|P|2.4\rNTE|1||Patient prefers\nmorning calls\nDog\rPV1|1|I\r",
        )
        .unwrap();
        let names: Vec<&str> = m.all_segments().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["MSH", "NTE", "PV1"]);
        assert_eq!(m.get("NTE-3"), Some("Patient prefers\nmorning calls\nDog"));
        // Segments separated by bare line feeds, and by \r\n, still split.
        for sep in ["\n", "\r\n", "\n\r"] {
            let text = [
                "MSH|^~\\&|PAS|RX1|||20261120||ADT^A01|1|P|2.4",
                "EVN|A01",
                "PID|1||X",
            ]
            .join(sep);
            let m = Message::parse(text.as_bytes()).unwrap();
            assert_eq!(m.all_segments().len(), 3, "{sep:?}");
            assert_eq!(m.get("PID-3"), Some("X"));
        }
        // A line after \r is a segment whatever it looks like.
        assert!(matches!(
            Message::parse(b"MSH|^~\\&|\rPID|1\rnot a segment"),
            Err(ParseError::InvalidSegmentName { segment: 3, .. })
        ));
    }

    #[test]
    fn an_empty_segment_after_a_bare_line_feed_is_a_segment() {
        let m = Message::parse(
            b"MSH|^~\\&|PAS|RX1|||20261120||ADT^A01|1|P|2.4\nPID|1||X|||||||||||||||||||||||||||||01\nPD1\nZU1|\nPV1|1|I\n",
        )
        .unwrap();
        let names: Vec<&str> = m.all_segments().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["MSH", "PID", "PD1", "ZU1", "PV1"]);
        assert_eq!(m.get("PID-32"), Some("01"));
        assert!(m.segment("PD1").unwrap().fields().is_empty());
        // A note's last word on a line of its own is still the note's.
        let m = Message::parse(b"MSH|^~\\&|A\nNTE|1||Walks with a\nDog\nPV1|1|I").unwrap();
        assert_eq!(m.get("NTE-3"), Some("Walks with a\nDog"));
    }

    #[test]
    fn control_characters_are_dropped() {
        let m = Message::parse(
            b"\x0BMSH|^~\\&|PAS\x0B|RX1\x00|||20261120||ADT^A01|C\x1C1|P|2.4\rPID|1||X||SMI\x0BTH\x00^JO\x01HN\tX||\\X00\\19\\X1B\\40\x1C\r",
        )
        .unwrap();
        assert_eq!(m.get("MSH-3"), Some("PAS"));
        assert_eq!(m.get("MSH-4"), Some("RX1"));
        assert_eq!(m.control_id(), Some("C1"));
        assert_eq!(m.get("PID-5.1"), Some("SMITH"));
        // A tab is text.
        assert_eq!(m.get("PID-5.2"), Some("JOHN\tX"));
        assert_eq!(m.get("PID-7"), Some("1940"));
        assert!(m
            .all_segments()
            .iter()
            .all(|s| !s.raw().contains(|c: char| c < ' ' && c != '\t')));
    }

    #[test]
    fn batches_are_not_messages() {
        for (text, header) in [
            (
                &b"FHS|^~\\&|PAS\rBHS|^~\\&|PAS\rMSH|^~\\&|A\rBTS|1\rFTS|1"[..],
                "FHS",
            ),
            (b"\x0B BHS|^~\\&|PAS\rMSH|^~\\&|A\rBTS|1", "BHS"),
        ] {
            assert_eq!(Message::parse(text), Err(ParseError::Batch { header }));
        }
        assert_eq!(
            ParseError::Batch { header: "FHS" }.to_string(),
            "input is an HL7 batch (it starts with FHS), not a single message"
        );
    }

    #[test]
    fn windows_1252_fallback_and_bom() {
        let m = Message::parse(b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1||||M\xDCLLER").unwrap();
        assert_eq!(m.text_encoding(), TextEncoding::Windows1252);
        // The BOM bytes were stripped before decoding, so they don't show up.
        assert_eq!(m.get("PID-5"), Some("MÜLLER"));
        let m = Message::parse("MSH|^~\\&|A\rPID|1||||MÜLLER".as_bytes()).unwrap();
        assert_eq!(m.text_encoding(), TextEncoding::Utf8);
        assert_eq!(m.get("PID-5"), Some("MÜLLER"));
        // Windows' curly apostrophe (0x92), not the C1 control U+0092 Latin-1 would give.
        let m = Message::parse(b"MSH|^~\\&|A\rPID|1||||O\x92BRIEN^ZO\xCB").unwrap();
        assert_eq!(m.get("PID-5.1"), Some("O\u{2019}BRIEN"));
        assert_eq!(m.get("PID-5.2"), Some("ZO\u{CB}"));
        // One Windows-1252 byte among UTF-8 text: the UTF-8 stays as it was.
        let m = Message::parse(b"MSH|^~\\&|A\rPID|1||||O\x92BRIEN^ZO\xC3\x8B").unwrap();
        assert_eq!(m.text_encoding(), TextEncoding::Windows1252);
        assert_eq!(m.get("PID-5.1"), Some("O\u{2019}BRIEN"));
        assert_eq!(m.get("PID-5.2"), Some("ZO\u{CB}"));
    }

    #[test]
    fn fields_are_split_when_first_asked_for() {
        let m = Message::parse_str("MSH|^~\\&|A\rPID|1||123^^^NHS^NH~R\\T\\1^^^X^MR").unwrap();
        let before = m.clone();
        let pid = m.segment("PID").unwrap();
        let pid3 = pid.field(3).unwrap();
        assert_eq!(pid3.repetitions().len(), 2);
        assert_eq!(pid3.repetition(2).unwrap().raw(), "R\\T\\1^^^X^MR");
        assert_eq!(m.get("PID-3[2].1"), Some("R&1"));
        assert_eq!(
            pid3.repetition(1).unwrap().component(4).unwrap().value(),
            "NHS"
        );
        // Whether a field was split yet makes no difference to equality or copies.
        assert_eq!(before, m);
        assert_eq!(before.get("PID-3[2].1"), Some("R&1"));
        assert_eq!(format!("{:?}", m.clone()), format!("{m:?}"));
    }

    #[test]
    fn empty_field_has_no_repetitions() {
        let m = Message::parse_str("MSH|^~\\&|A\rPID|1||").unwrap();
        let pid = m.segment("PID").unwrap();
        assert!(pid.field(2).unwrap().is_empty());
        assert!(pid.field(2).unwrap().repetitions().is_empty());
        assert_eq!(pid.field(2).unwrap().value(), "");
        assert_eq!(m.get("PID-2"), None);
        assert_eq!(m.get("PID-1"), Some("1"));
    }
}
