//! HL7 DTM / TS timestamps: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
//!
//! No date-time library is used: [`Timestamp`] is a plain, validated struct
//! that callers convert into whatever type they use.

use std::fmt;
use std::str::FromStr;

/// Errors from [`Timestamp::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// The value was empty.
    #[error("timestamp is empty")]
    Empty,
    /// The value does not have the DTM shape.
    #[error("malformed timestamp {value:?}: {reason}")]
    Malformed {
        /// The value (first 40 characters).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A part is outside its valid range (e.g. month 13, 30 February).
    #[error("{part} {value} out of range {min}..={max}")]
    OutOfRange {
        /// Which part: `month`, `day`, `hour`, `minute`, `second`,
        /// `offset hours` or `offset minutes`.
        part: &'static str,
        /// The value found.
        value: u32,
        /// Smallest valid value.
        min: u32,
        /// Largest valid value.
        max: u32,
    },
}

/// How much of a timestamp was given; missing parts read as their minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS`
    Second,
    /// `YYYYMMDDHHMMSS.S` with the given number of fraction digits.
    Fraction(u8),
}

/// A validated HL7 timestamp. Parts beyond [`Timestamp::precision`] are set to
/// their minimum (month and day 1, time 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Year, four digits.
    pub year: u16,
    /// Month, 1–12.
    pub month: u8,
    /// Day of month, 1–28/29/30/31.
    pub day: u8,
    /// Hour, 0–23.
    pub hour: u8,
    /// Minute, 0–59.
    pub minute: u8,
    /// Second, 0–59.
    pub second: u8,
    /// Fraction of a second in nanoseconds.
    pub nanos: u32,
    /// UTC offset in minutes (`+0100` → 60); `None` when the value has no
    /// offset (local time of the sender, per HL7).
    pub offset_minutes: Option<i32>,
    /// How many parts the value gave.
    pub precision: Precision,
}

impl Timestamp {
    /// Parses an HL7 DTM value, or a v2.3 TS value `DTM^precision` (only the
    /// part before the first `^` is used).
    ///
    /// Surrounding whitespace is ignored. The fraction may have 1 to 4 digits
    /// per the standard; up to 9 are accepted since some systems send
    /// microseconds. An offset (`+HHMM`/`-HHMM`, hours at most 14) may follow
    /// any precision.
    pub fn parse(value: &str) -> Result<Self, TimestampError> {
        let value = value.split('^').next().unwrap_or("").trim();
        if value.is_empty() {
            return Err(TimestampError::Empty);
        }
        let bad = |reason| TimestampError::Malformed {
            value: value.chars().take(40).collect(),
            reason,
        };
        if !value
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(bad("expected digits"));
        }
        let (main, offset) = match value.find(['+', '-']) {
            Some(pos) => (&value[..pos], Some(&value[pos..])),
            None => (value, None),
        };
        let (digits, fraction) = match main.split_once('.') {
            Some((d, f)) => (d, Some(f)),
            None => (main, None),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits"));
        }
        let mut precision = match digits.len() {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            _ => {
                return Err(bad(
                    "expected 4, 6, 8, 10, 12 or 14 digits before any fraction",
                ))
            }
        };
        let part = |i: usize, len: usize| -> u32 {
            digits
                .get(i..i + len)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        let year = part(0, 4);
        let month = if digits.len() >= 6 {
            check("month", part(4, 2), 1, 12)?
        } else {
            1
        };
        let day = if digits.len() >= 8 {
            check("day", part(6, 2), 1, days_in_month(year, month))?
        } else {
            1
        };
        let hour = check("hour", part(8, 2), 0, 23)?;
        let minute = check("minute", part(10, 2), 0, 59)?;
        let second = check("second", part(12, 2), 0, 59)?;

        let mut nanos = 0;
        if let Some(f) = fraction {
            if precision != Precision::Second {
                return Err(bad("a fraction needs seconds"));
            }
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("fraction must be 1 to 9 digits"));
            }
            let n: u32 = f
                .parse()
                .map_err(|_| bad("fraction must be 1 to 9 digits"))?;
            nanos = n * 10u32.pow(9 - f.len() as u32);
            precision = Precision::Fraction(f.len() as u8);
        }

        let offset_minutes = match offset {
            None => None,
            Some(o) => {
                let (sign, hhmm) = o.split_at(1);
                if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("offset must be +HHMM or -HHMM"));
                }
                let hh = check("offset hours", hhmm[..2].parse().unwrap_or(99), 0, 14)?;
                let mm = check("offset minutes", hhmm[2..].parse().unwrap_or(99), 0, 59)?;
                let total = (hh * 60 + mm) as i32;
                Some(if sign == "-" { -total } else { total })
            }
        };

        Ok(Self {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            nanos,
            offset_minutes,
            precision,
        })
    }
}

fn check(part: &'static str, value: u32, min: u32, max: u32) -> Result<u32, TimestampError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(TimestampError::OutOfRange {
            part,
            value,
            min,
            max,
        })
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Timestamp {
    /// Formats as an HL7 DTM at the timestamp's own precision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if self.precision >= Precision::Month {
            write!(f, "{:02}", self.month)?;
        }
        if self.precision >= Precision::Day {
            write!(f, "{:02}", self.day)?;
        }
        if self.precision >= Precision::Hour {
            write!(f, "{:02}", self.hour)?;
        }
        if self.precision >= Precision::Minute {
            write!(f, "{:02}", self.minute)?;
        }
        if self.precision >= Precision::Second {
            write!(f, "{:02}", self.second)?;
        }
        if let Precision::Fraction(digits) = self.precision {
            let digits = usize::from(digits.clamp(1, 9));
            let nanos = format!("{:09}", self.nanos);
            write!(f, ".{}", &nanos[..digits])?;
        }
        if let Some(off) = self.offset_minutes {
            let sign = if off < 0 { '-' } else { '+' };
            let off = off.unsigned_abs();
            write!(f, "{sign}{:02}{:02}", off / 60, off % 60)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn display_round_trips() {
        for s in [
            "2024",
            "202402",
            "20240229",
            "2024022913",
            "202402291305",
            "20240229130559",
            "20240229130559.1",
            "20240229130559.1234",
            "20240229130559.123456",
            "20240229130559+0100",
            "20240229-0530",
            "20240229130559.12-1200",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects() {
        let e = |s: &str| Timestamp::parse(s).unwrap_err().to_string();
        assert_eq!(e("20241301"), "month 13 out of range 1..=12");
        assert_eq!(e("20230229"), "day 29 out of range 1..=28");
        assert_eq!(e("2024010124"), "hour 24 out of range 0..=23");
        assert_eq!(e("202401012360"), "minute 60 out of range 0..=59");
        assert_eq!(e("20240101235960"), "second 60 out of range 0..=59");
        assert_eq!(e("20240101+1500"), "offset hours 15 out of range 0..=14");
        assert_eq!(e(""), "timestamp is empty");
        assert_eq!(e("^S"), "timestamp is empty");
        assert_eq!(
            e("2024010"),
            "malformed timestamp \"2024010\": expected 4, 6, 8, 10, 12 or 14 digits before any fraction"
        );
        for bad in [
            "2024-01-01",
            "20240101T1200",
            "202401011200.5",
            "20240101120000.",
            "20240101120000.1234567890",
            "20240101+01",
            "20240101+01:00",
            "20240101+0100+0100",
            "２０２４",
            "+0100",
        ] {
            assert!(Timestamp::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
