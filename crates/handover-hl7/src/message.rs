//! HL7 v2 message model and parser (v2.3 – v2.5.1, tolerant of later versions).
//!
//! A [`Message`] is a list of [`Segment`]s; a segment has [`Field`]s, a field
//! has [`Repetition`]s, a repetition has [`Component`]s and a component has
//! subcomponents. All numbering is 1-based and follows the standard, so for
//! `MSH` field 1 is the field separator itself and field 2 the encoding
//! characters (MSH-9 is the message type, MSH-10 the control id, ...).
//!
//! Values are decoded (escape sequences resolved, see
//! [`unescape`]) once at parse time; the wire text of
//! each field, repetition and component is kept and available as `raw()`.
//!
//! Input handling (see [`Message::parse`]): a UTF-8 BOM, surrounding
//! whitespace and stray MLLP block characters are ignored; segments may be
//! terminated by `\r`, `\n` or `\r\n` in any mix; blank lines are skipped,
//! as is whitespace at the start of a segment;
//! bytes that are not valid UTF-8 are decoded as ISO-8859-1.
//!
//! The HL7 "explicit null" value `""` is not interpreted: it reads back as the
//! two-character string `""`.

use std::str::FromStr;

use crate::escape::{unescape, Separators};

/// Errors from [`Message::parse`] and [`Message::parse_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The input held nothing but whitespace.
    #[error("message is empty")]
    Empty,
    /// The first segment is not `MSH`.
    #[error("message does not start with an MSH segment")]
    MissingMsh,
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
    /// The input was not valid UTF-8 and was decoded as ISO-8859-1 (Latin-1).
    Latin1,
}

/// One component: its wire text and its decoded subcomponents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    raw: String,
    subcomponents: Vec<String>,
}

impl Component {
    /// The component's text as received (escape sequences not decoded).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The decoded subcomponents; always at least one (possibly empty).
    pub fn subcomponents(&self) -> &[String] {
        &self.subcomponents
    }

    /// Subcomponent `n` (1-based), decoded.
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        self.subcomponents
            .get(n.checked_sub(1)?)
            .map(String::as_str)
    }

    /// The decoded first subcomponent, which is the whole component when it
    /// has no subcomponent separators.
    pub fn value(&self) -> &str {
        self.subcomponents.first().map_or("", String::as_str)
    }
}

/// One repetition of a field: its wire text and its components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repetition {
    raw: String,
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

/// One field: its wire text and its repetitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    raw: String,
    repetitions: Vec<Repetition>,
}

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
        &self.repetitions
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        self.repetitions.get(n.checked_sub(1)?)
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.repetition(1)?.component(n)
    }

    /// The decoded first subcomponent of the first component of the first
    /// repetition (`""` for an empty field).
    pub fn value(&self) -> &str {
        self.repetitions.first().map_or("", Repetition::value)
    }

    fn parse(raw: &str, seps: &Separators) -> Self {
        let repetitions = if raw.is_empty() {
            Vec::new()
        } else {
            raw.split(seps.repetition)
                .map(|rep| Repetition {
                    raw: rep.to_owned(),
                    components: rep
                        .split(seps.component)
                        .map(|comp| Component {
                            raw: comp.to_owned(),
                            subcomponents: comp
                                .split(seps.subcomponent)
                                .map(|sub| unescape(sub, seps).into_owned())
                                .collect(),
                        })
                        .collect(),
                })
                .collect()
        };
        Self {
            raw: raw.to_owned(),
            repetitions,
        }
    }

    /// A field whose text is taken literally (MSH-1 and MSH-2).
    fn literal(raw: &str) -> Self {
        Self {
            raw: raw.to_owned(),
            repetitions: vec![Repetition {
                raw: raw.to_owned(),
                components: vec![Component {
                    raw: raw.to_owned(),
                    subcomponents: vec![raw.to_owned()],
                }],
            }],
        }
    }
}

/// One segment: its name and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    name: String,
    raw: String,
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

fn valid_delimiter(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

impl Message {
    /// Parses a message from bytes.
    ///
    /// The bytes are decoded as UTF-8 when valid; otherwise each byte is read
    /// as an ISO-8859-1 (Latin-1) character, which is what older PAS systems
    /// send (see [`Message::text_encoding`]). MSH-18 is not consulted. A UTF-8
    /// BOM is ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, ParseError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::parse_text(text, TextEncoding::Utf8),
            Err(_) => {
                let text: String = bytes.iter().map(|&b| char::from(b)).collect();
                Self::parse_text(&text, TextEncoding::Latin1)
            }
        }
    }

    /// Parses a message that is already text.
    pub fn parse_str(text: &str) -> Result<Self, ParseError> {
        Self::parse_text(text, TextEncoding::Utf8)
    }

    fn parse_text(text: &str, encoding: TextEncoding) -> Result<Self, ParseError> {
        let text = text.trim_matches(is_padding);
        if text.is_empty() {
            return Err(ParseError::Empty);
        }
        let Some(after_msh) = text.strip_prefix("MSH") else {
            return Err(ParseError::MissingMsh);
        };
        let separators = Self::read_separators(after_msh)?;
        let segments = text
            .split(['\r', '\n'])
            .filter(|line| !line.trim().is_empty())
            .enumerate()
            .map(|(i, line)| Self::parse_segment(i + 1, line.trim_start(), &separators))
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

    fn parse_segment(index: usize, line: &str, seps: &Separators) -> Result<Segment, ParseError> {
        let (name, rest) = match line.split_once(seps.field) {
            Some((name, rest)) => (name, Some(rest)),
            None => (line, None),
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
                let mut buf = [0u8; 4];
                fields.push(Field::literal(seps.field.encode_utf8(&mut buf)));
                if let Some(enc) = pieces.next() {
                    fields.push(Field::literal(enc));
                }
            }
            fields.extend(pieces.map(|raw| Field::parse(raw, seps)));
        }
        Ok(Segment {
            name: name.to_owned(),
            raw: line.to_owned(),
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
        self.segments.iter().find(|s| s.name == name)
    }

    /// All segments called `name`, in order.
    pub fn segments<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.name == name)
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
            .filter(|s| s.name == path.segment)
            .nth(path.segment_index - 1)?
            .field(path.field)?
            .repetition(path.repetition)?
            .component(path.component)?
            .subcomponent(path.subcomponent)?;
        (!value.is_empty()).then_some(value)
    }

    /// MSH-9.1, the message type (e.g. `ADT`).
    pub fn message_type(&self) -> Option<&str> {
        self.get("MSH-9.1")
    }

    /// MSH-9.2, the trigger event (e.g. `A01`).
    pub fn trigger_event(&self) -> Option<&str> {
        self.get("MSH-9.2")
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> Option<&str> {
        self.get("MSH-10")
    }

    /// MSH-12.1, the version id (e.g. `2.4`).
    pub fn version(&self) -> Option<&str> {
        self.get("MSH-12.1")
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
    fn latin1_fallback_and_bom() {
        let m = Message::parse(b"\xEF\xBB\xBFMSH|^~\\&|A\rPID|1||||M\xDCLLER").unwrap();
        assert_eq!(m.text_encoding(), TextEncoding::Latin1);
        // The BOM bytes were stripped before decoding, so they don't show up.
        assert_eq!(m.get("PID-5"), Some("MÜLLER"));
        let m = Message::parse("MSH|^~\\&|A\rPID|1||||MÜLLER".as_bytes()).unwrap();
        assert_eq!(m.text_encoding(), TextEncoding::Utf8);
        assert_eq!(m.get("PID-5"), Some("MÜLLER"));
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
