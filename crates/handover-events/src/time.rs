//! Timestamps and dates as UK source systems send them, and the days-delayed rule.
//!
//! Timestamps without an offset are UK local time (Europe/London), per the contract.

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Europe::London;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with the offset it was given in (UK local time when none was given).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub DateTime<FixedOffset>);

/// A calendar date (`YYYY-MM-DD`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Date(pub NaiveDate);

/// Why a string is not a timestamp or date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not in any accepted layout.
    #[error("not a date-time: expected RFC 3339, e.g. 2026-11-20T09:14:00Z (no offset means UK local time)")]
    DateTime,
    /// Not in any accepted layout.
    #[error("not a date: expected YYYY-MM-DD")]
    Date,
}

impl Timestamp {
    /// Parses RFC 3339, or a local date-time (`T` or space, optional seconds and fraction)
    /// taken as Europe/London, or a bare date taken as local midnight.
    pub fn parse(input: &str) -> Result<Timestamp, TimeError> {
        let s = input.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Timestamp(t));
        }
        // The looser forms the schemas allow: a space for `T`, a comma before the fraction
        // (ISO 8601), a `Z` after minutes without seconds.
        let mut with_t = s.replacen(' ', "T", 1).replacen(',', ".", 1);
        if with_t.ends_with(['Z', 'z']) {
            with_t.pop();
            with_t.push_str("+00:00");
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(&with_t) {
            return Ok(Timestamp(t));
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
            if let Ok(t) = DateTime::parse_from_str(&with_t, fmt) {
                return Ok(Timestamp(t));
            }
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(&with_t, fmt) {
                return Ok(Timestamp::from_london(n));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            if let Some(n) = d.and_hms_opt(0, 0, 0) {
                return Ok(Timestamp::from_london(n));
            }
        }
        Err(TimeError::DateTime)
    }

    /// A UK local wall-clock time as a timestamp: the earlier instant when the clocks go back,
    /// and an hour later when it falls in the gap when they go forward.
    pub fn from_london(local: NaiveDateTime) -> Timestamp {
        let resolved = London.from_local_datetime(&local).earliest().or_else(|| {
            London
                .from_local_datetime(&(local + chrono::Duration::hours(1)))
                .earliest()
        });
        match resolved {
            Some(t) => Timestamp(t.fixed_offset()),
            // Unreachable for Europe/London (gaps are one hour); fall back to reading it as UTC.
            None => Timestamp(Utc.from_utc_datetime(&local).fixed_offset()),
        }
    }

    /// The calendar date of this instant in Europe/London.
    pub fn london_date(&self) -> NaiveDate {
        self.0.with_timezone(&London).date_naive()
    }

    /// RFC 3339 with the original offset (`Z` for UTC).
    pub fn to_rfc3339(&self) -> String {
        self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// Milliseconds since the Unix epoch, for ordering.
    pub fn unix_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }
}

impl Date {
    /// Parses `YYYY-MM-DD`; a date-time is accepted too and gives its Europe/London date.
    pub fn parse(input: &str) -> Result<Date, TimeError> {
        let s = input.trim();
        if let Some(d) = plain_date(s) {
            return Ok(Date(d));
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(Date(d));
        }
        if s.len() > 10 {
            if let Ok(t) = Timestamp::parse(s) {
                return Ok(Date(t.london_date()));
            }
        }
        Err(TimeError::Date)
    }
}

/// `YYYY-MM-DD` exactly (four-digit year, two-digit month and day), read without
/// interpreting a format string: the layout every stored date has, and most received ones
/// (the read models decode several per row). Anything else is left to chrono.
fn plain_date(s: &str) -> Option<NaiveDate> {
    let b: &[u8; 10] = s.as_bytes().try_into().ok()?;
    if b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, num(5..7)?, num(8..10)?)
}

/// Days delayed, per the contract: (the discharge date, or `today` while still in hospital)
/// minus the discharge ready date, in whole calendar days in Europe/London; 0 on the DRD
/// itself and never negative.
pub fn days_delayed(ready: NaiveDate, discharged: Option<&Timestamp>, today: NaiveDate) -> i64 {
    let end = discharged.map(Timestamp::london_date).unwrap_or(today);
    (end - ready).num_days().max(0)
}

/// Today's date in Europe/London.
pub fn london_today() -> NaiveDate {
    Utc::now().with_timezone(&London).date_naive()
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use chrono::Datelike;
        let d = self.0;
        if (0..=9999).contains(&d.year()) {
            // What `%Y-%m-%d` gives, without parsing a format string per date (the
            // projector writes several dates per event).
            write!(f, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
        } else {
            write!(f, "{}", d.format("%Y-%m-%d"))
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Date::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "RFC 3339 date-time; without an offset it is UK local time (Europe/London)",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}([Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)?([Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$"
        })
    }
}

impl JsonSchema for Date {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Date".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "calendar date YYYY-MM-DD (a date-time is accepted and gives its UK date)",
            "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> String {
        Timestamp::parse(s)
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn accepts_the_layouts_uk_systems_send() {
        assert_eq!(ts("2026-11-20T09:14:00Z"), "2026-11-20T09:14:00Z");
        assert_eq!(ts("2026-11-20T09:14:00+00:00"), "2026-11-20T09:14:00Z");
        assert_eq!(
            ts("2026-07-20T09:14:00.250+01:00"),
            "2026-07-20T09:14:00.250+01:00"
        );
        // no offset: UK local time, so BST in summer and GMT in winter
        assert_eq!(ts("2026-07-20T09:14:00"), "2026-07-20T09:14:00+01:00");
        assert_eq!(ts("2026-11-20 09:14"), "2026-11-20T09:14:00Z");
        assert_eq!(ts("2026-11-20"), "2026-11-20T00:00:00Z");
        // clocks go forward at 01:00 on 2026-03-29: 01:30 does not exist, read as 02:30 BST
        assert_eq!(ts("2026-03-29T01:30:00"), "2026-03-29T02:30:00+01:00");
        // clocks go back at 02:00 on 2026-10-25: 01:30 happens twice, the first is taken
        assert_eq!(ts("2026-10-25T01:30:00"), "2026-10-25T01:30:00+01:00");
        // the looser forms the schema's pattern allows
        assert_eq!(ts("2026-11-20T09:14Z"), "2026-11-20T09:14:00Z");
        assert_eq!(ts("2026-11-20t09:14:00z"), "2026-11-20T09:14:00Z");
        assert_eq!(ts("2026-11-20T09:14:00,5Z"), "2026-11-20T09:14:00.500Z");
        assert_eq!(ts("2026-07-20T09:14+0100"), "2026-07-20T09:14:00+01:00");
        assert!(Timestamp::parse("20/11/2026").is_err());
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_err());
        assert!(Timestamp::parse("2026-11-20,09:14:00Z").is_err());
    }

    #[test]
    fn dates_print_as_strftime_would() {
        for (y, m, d) in [
            (1, 2, 3),
            (999, 12, 31),
            (2026, 11, 22),
            (9999, 1, 1),
            (10_000, 3, 4),
            (-5, 6, 7),
        ] {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(Date(date).to_string(), date.format("%Y-%m-%d").to_string());
        }
        assert_eq!(Date::parse("2026-11-05").unwrap().to_string(), "2026-11-05");
    }

    #[test]
    fn plain_dates_read_as_chrono_reads_them() {
        let chrono_reads = |s: &str| NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok();
        let mut cases: Vec<String> = [
            "2026-11-05",
            " 2026-11-05 ",
            "0001-01-01",
            "9999-12-31",
            "2024-02-29",
            "2025-02-29",
            "2026-02-30",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-1-05",
            "2026-01-5",
            "26-01-05",
            "2026/01/05",
            "2026-01-05x",
            "+2026-01-05",
            "2026-0a-05",
            "２026-01-05",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every month and day number 0..=32 of a leap and a common year.
        for y in [2024, 2026] {
            for m in 0..=13 {
                for d in 0..=32 {
                    cases.push(format!("{y:04}-{m:02}-{d:02}"));
                }
            }
        }
        for s in &cases {
            let fast = plain_date(s.trim());
            if fast.is_some() {
                assert_eq!(fast, chrono_reads(s), "{s:?}");
            }
            assert_eq!(
                Date::parse(s).ok().map(|d| d.0),
                chrono_reads(s).or_else(|| (s.trim().len() > 10)
                    .then(|| Timestamp::parse(s).ok().map(|t| t.london_date()))
                    .flatten()),
                "{s:?}"
            );
        }
        // The fast path takes the layout it is for.
        assert!(plain_date("2026-11-05").is_some());
        assert!(plain_date("2026-11-5").is_none());
    }

    #[test]
    fn days_delayed_counts_uk_calendar_days() {
        let d = |s| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(days_delayed(d("2026-11-20"), None, d("2026-11-20")), 0);
        assert_eq!(days_delayed(d("2026-11-20"), None, d("2026-11-23")), 3);
        // 23:30 UTC on 2026-07-20 is already 21 July in London
        let late = Timestamp::parse("2026-07-20T23:30:00Z").unwrap();
        assert_eq!(
            days_delayed(d("2026-07-18"), Some(&late), d("2026-12-01")),
            3
        );
        // discharged before the DRD is not a negative delay
        assert_eq!(
            days_delayed(d("2026-07-25"), Some(&late), d("2026-12-01")),
            0
        );
    }
}
