//! NHS numbers: ten digits whose last is a Modulus 11 check digit.

use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated NHS number, held as its ten digits.
///
/// Parsing is liberal about presentation (`943 476 5919`, `943-476-5919`) and strict about
/// content: exactly ten digits with a valid Modulus 11 check digit, not all the same.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NhsNumber([u8; 10]);

/// Why a string is not an NHS number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NhsNumberError {
    /// Not ten digits once spaces and hyphens are removed.
    #[error("an NHS number has 10 digits")]
    Length,
    /// A character other than a digit, space or hyphen.
    #[error("an NHS number has only digits")]
    NotDigits,
    /// The tenth digit does not match the Modulus 11 check.
    #[error("the NHS number's check digit is wrong (Modulus 11)")]
    CheckDigit,
    /// Ten identical digits (`0000000000`, `9999999999`): they pass the Modulus 11 check, but
    /// are placeholders for an unknown number, never issued.
    #[error("ten identical digits are a placeholder, not an NHS number")]
    Placeholder,
}

impl NhsNumber {
    /// Parses an NHS number, accepting spaces and hyphens between digit groups.
    pub fn parse(input: &str) -> Result<NhsNumber, NhsNumberError> {
        let mut digits = [0u8; 10];
        let mut n = 0;
        for c in input.trim().chars() {
            match c {
                '0'..='9' => {
                    if n == 10 {
                        return Err(NhsNumberError::Length);
                    }
                    digits[n] = c as u8 - b'0';
                    n += 1;
                }
                ' ' | '-' => {}
                _ => return Err(NhsNumberError::NotDigits),
            }
        }
        if n != 10 {
            return Err(NhsNumberError::Length);
        }
        if digits.iter().all(|&d| d == digits[0]) {
            return Err(NhsNumberError::Placeholder);
        }
        match check_digit(&digits[..9]) {
            Some(check) if check == digits[9] => Ok(NhsNumber(digits)),
            _ => Err(NhsNumberError::CheckDigit),
        }
    }

    /// The ten digits as a string.
    pub fn as_string(&self) -> String {
        self.ascii().iter().map(|&d| char::from(d)).collect()
    }

    /// The ten digits as ASCII, without allocating.
    pub fn ascii(&self) -> [u8; 10] {
        self.0.map(|d| b'0' + d)
    }
}

/// The Modulus 11 check digit for nine digits, or `None` when the number cannot be valid.
pub fn check_digit(nine: &[u8]) -> Option<u8> {
    let sum: u32 = nine
        .iter()
        .zip((2..=10).rev())
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - (sum % 11) {
        11 => Some(0),
        10 => None,
        c => Some(c as u8),
    }
}

impl fmt::Display for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// Deliberately redacted: an NHS number never reaches a log through `{:?}`.
impl fmt::Debug for NhsNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NhsNumber(<redacted>)")
    }
}

impl std::str::FromStr for NhsNumber {
    type Err = NhsNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NhsNumber::parse(s)
    }
}

impl Serialize for NhsNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_string())
    }
}

impl<'de> Deserialize<'de> for NhsNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NhsNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for NhsNumber {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "NhsNumber".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "NHS number: 10 digits, the last a Modulus 11 check digit; spaces or hyphens between groups are accepted",
            "pattern": "^ *[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4} *$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_numbers_parse_in_any_presentation() {
        for s in ["9434765919", "943 476 5919", "943-476-5919", " 9434765919 "] {
            assert_eq!(
                NhsNumber::parse(s).map(|n| n.as_string()),
                Ok("9434765919".to_string())
            );
        }
    }

    #[test]
    fn invalid_numbers_are_rejected_with_the_reason() {
        assert_eq!(
            NhsNumber::parse("9434765918"),
            Err(NhsNumberError::CheckDigit)
        );
        assert_eq!(NhsNumber::parse("943476591"), Err(NhsNumberError::Length));
        assert_eq!(NhsNumber::parse("94347659190"), Err(NhsNumberError::Length));
        assert_eq!(
            NhsNumber::parse("94347659A9"),
            Err(NhsNumberError::NotDigits)
        );
        // check digit 10 is never valid
        assert_eq!(check_digit(&[0, 0, 0, 0, 0, 0, 0, 0, 6]), None);
        // every repeated digit passes Modulus 11, and none is a number
        for d in '0'..='9' {
            let s: String = std::iter::repeat_n(d, 10).collect();
            assert_eq!(
                NhsNumber::parse(&s),
                Err(NhsNumberError::Placeholder),
                "{s}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_number() {
        let n = NhsNumber::parse("9434765919").unwrap();
        assert!(!format!("{n:?}").contains("943"));
    }

    proptest::proptest! {
        #[test]
        fn every_nine_digits_with_their_check_digit_parse(nine in proptest::collection::vec(0u8..10, 9)) {
            if let Some(c) = check_digit(&nine).filter(|&c| !nine.iter().all(|&d| d == c)) {
                let s: String = nine.iter().chain(std::iter::once(&c)).map(|d| char::from(b'0' + d)).collect();
                proptest::prop_assert!(NhsNumber::parse(&s).is_ok());
                let wrong = (c + 1) % 10;
                let s2: String = nine.iter().chain(std::iter::once(&wrong)).map(|d| char::from(b'0' + d)).collect();
                proptest::prop_assert!(NhsNumber::parse(&s2).is_err());
            }
        }
    }
}
