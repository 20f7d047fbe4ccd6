//! Council file drop: CSV or JSON exports (brokerage, referrals, assessments) dropped into a
//! directory, each row translated to a catalogue event through a mapping file.
//!
//! For every configured [`FileSource`] the adapter polls `dir` every `poll_interval_ms` and
//! processes each finished file exactly once, in name order:
//!
//! 1. **Pick-up.** Only files named `*.csv` (format `csv`) or `*.json` (format `json`) that have
//!    not been modified for `settle_ms` are read; anything else (`*.tmp`, `*.part`, dotfiles,
//!    sub-directories) is left alone. Writers should write `name.csv.tmp` and rename it to
//!    `name.csv` when complete (a rename is atomic); a writer that writes in place is covered by
//!    the settle time.
//! 2. **Translate.** Each row goes through the pure [`translate_row`] with the source's
//!    [`Mapping`]. A rejected row is listed, with every reason, in `rejected/<file>.errors.csv`
//!    (`row,column,reason,original_row`); the other rows go on.
//! 3. **Publish.** Accepted rows' events are handed to the [`EventSink`] in file order, in
//!    chunks of `chunk_rows`. If the sink is unavailable the file stays where it is and is
//!    retried at the next poll.
//! 4. **Done.** Only after every chunk was acknowledged (durable) is the file moved to
//!    `done/` (as `done/<name>.<n>.<ext>` if that name is taken).
//!
//! Event ids are deterministic: `<file>/<row key>/<event type>`, the row key being the
//! mapping's id columns or else the row's line number and a hash of its content. A process
//! killed mid-file, or the same file dropped again, therefore republishes the same ids, which
//! the event log (`Nats-Msg-Id` window) and the journey projection (`source`+`id`) store once.
//! With `per_file = false` in the mapping's `[id]`, the file name is left out, so a cumulative
//! export repeating yesterday's rows is recognised too.
//!
//! Logs and metrics carry the source name, file name and counts, never a person's identifier.
//!
//! # Configuration
//!
//! ```toml
//! [filedrop]
//! poll_interval_ms = 1000
//! settle_ms = 2000
//! chunk_rows = 200
//!
//! [[filedrop.sources]]
//! name = "leeds-brokerage"
//! dir = "/var/lib/handover/drop/leeds-brokerage"
//! source = "urn:gss:E08000035:brokerage"
//! format = "csv"
//! mapping = "/etc/handover/mappings/brokerage-homecare.toml"
//! ```
//!
//! The mapping file format is described on [`Mapping`]; `deploy/mappings/` has examples.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::format::{Item, StrftimeItems};
use chrono::{Datelike, NaiveDate, NaiveDateTime};
use handover_events::{Event, EventSink, EventType, NhsNumber, SinkError, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

/// This adapter's entry in the [registry](crate::ADAPTERS).
pub const ADAPTER: crate::Adapter = crate::Adapter {
    name: "filedrop",
    config_section: "filedrop",
    summary:
        "CSV or JSON exports from council systems (brokerage, referrals) dropped in a directory",
    check: |v| crate::section::<FileDropConfig>("filedrop", v).map(|_| ()),
    start: |v, ctx| Box::pin(start(v, ctx)),
};

/// Checks the mapping files named in the `[filedrop]` section and returns the run loop.
async fn start(section: toml::Value, ctx: crate::Context) -> Result<crate::Started, String> {
    let cfg: FileDropConfig = crate::section("filedrop", &section)?;
    let metrics = Arc::new(FileDropMetrics::default());
    let rendered = metrics.clone();
    let shutdown = ctx.shutdown_signal();
    let sink = ctx.sink.clone();
    Ok(crate::Started {
        listening: None,
        metrics: Box::new(move || rendered.render_prometheus()),
        task: Box::pin(async move {
            if cfg.sources.is_empty() {
                return;
            }
            if let Err(e) = run(Arc::new(cfg), sink, metrics, shutdown).await {
                tracing::error!(error = %e, "file drop adapter stopped");
            }
        }),
    })
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The `[filedrop]` section of `handover.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileDropConfig {
    /// How often each directory is scanned, in milliseconds (default 1000).
    pub poll_interval_ms: u64,
    /// A file is read only once it has not been modified for this many milliseconds (default
    /// 2000), so a file still being written is not picked up.
    pub settle_ms: u64,
    /// Events handed to the event log per call (default 200).
    pub chunk_rows: usize,
    /// The watched directories, one per exporting system.
    pub sources: Vec<FileSource>,
}

impl Default for FileDropConfig {
    fn default() -> Self {
        FileDropConfig {
            poll_interval_ms: 1000,
            settle_ms: 2000,
            chunk_rows: 200,
            sources: Vec::new(),
        }
    }
}

/// One watched directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    /// Short name, used in logs and metric labels (e.g. `leeds-brokerage`).
    pub name: String,
    /// The directory files are dropped into; `done/` and `rejected/` are created inside it.
    pub dir: PathBuf,
    /// The CloudEvents `source` of every event, e.g. `urn:gss:E08000035:brokerage`.
    pub source: String,
    /// The file format.
    pub format: FileFormat,
    /// Path of the mapping TOML file (see [`Mapping`]).
    pub mapping: PathBuf,
}

/// The format of dropped files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Comma-separated values with a header row (UTF-8, with or without a BOM; Windows-1252
    /// files are read as Latin-1).
    Csv,
    /// A JSON array of flat objects (keys are the columns).
    Json,
}

impl FileFormat {
    /// The file extension picked up.
    pub fn extension(&self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
        }
    }
}

/// A mapping file: how the rows of one export become events.
///
/// ```toml
/// date_format = "%d/%m/%Y"
///
/// [event]                       # which event type a row becomes
/// column = "Status"             # chosen by this column's value ...
/// values = { REQUESTED = "care-package.requested", STARTED = "care-package.started", DRAFT = "skip" }
/// # type = "care-package.requested"   # ... or fixed for every row
///
/// [time]                        # when it happened
/// column = "Status Date"
///
/// [person]                      # who it is about
/// nhs_number = "NHS Number"
/// local_id = { system = "urn:gss:E08000035:mosaic", column = "Mosaic ID" }
///
/// [id]                          # the row key of the event id
/// columns = ["Package ID", "Status Date"]
///
/// [fields]                      # event data field = how to fill it
/// package_id = { column = "Package ID" }
/// service_type = { column = "Service Type", codes = { HC = "home-care", REAB = "reablement" } }
/// hours_per_week = { column = "Hours", kind = "number" }
/// required_start = { column = "Required Start", kind = "date" }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Which event type each row becomes.
    pub event: EventRule,
    /// When each row's event happened.
    pub time: TimeRule,
    /// Who each row is about.
    pub person: PersonRule,
    /// How the row key of each event id is formed.
    #[serde(default)]
    pub id: IdRule,
    /// Default chrono format of date cells (default `%d/%m/%Y`).
    #[serde(default = "default_date_format")]
    pub date_format: String,
    /// Event data field (e.g. `package_id`) → how to fill it from the row. A field is set only
    /// on event types that have it, so one mapping can serve several types.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldRule>,
}

fn default_date_format() -> String {
    "%d/%m/%Y".into()
}

/// Which event type a row becomes: `type` for every row, or `column` + `values`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRule {
    /// The event type of every row, e.g. `care-package.requested` (or the full
    /// `handover.care-package.requested.v1`).
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    /// The column whose value chooses the event type.
    #[serde(default)]
    pub column: Option<String>,
    /// Column value (trimmed, case-insensitive) → event type, or `skip` for rows that record
    /// nothing. A value not listed rejects the row.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

/// When a row's event happened (UK local time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRule {
    /// The column holding the date or date-time.
    pub column: String,
    /// Chrono format of a date-time (e.g. `%d/%m/%Y %H:%M`); a cell holding only a date in
    /// the mapping's `date_format` is read as local midnight. Default: `date_format`.
    #[serde(default)]
    pub format: Option<String>,
}

/// Who a row is about: the NHS number when the cell holds one, else the local id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonRule {
    /// The column holding the NHS number (spaces and hyphens allowed).
    #[serde(default)]
    pub nhs_number: Option<String>,
    /// The local person id, used when the NHS number cell is empty.
    #[serde(default)]
    pub local_id: Option<LocalIdRule>,
}

/// A local id column and the system it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalIdRule {
    /// The issuing system, e.g. `urn:gss:E08000035:mosaic`.
    pub system: String,
    /// The column holding the id.
    pub column: String,
}

/// The row key of event ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdRule {
    /// Columns whose values, joined, identify the row (e.g. the package id and status date).
    /// Empty (the default): the row's line number and a hash of its content.
    pub columns: Vec<String>,
    /// Whether the file name is part of the id (default true). Set false for cumulative
    /// exports, so a row repeated in a later file is a duplicate (needs `columns`).
    pub per_file: bool,
}

impl Default for IdRule {
    fn default() -> Self {
        IdRule {
            columns: Vec::new(),
            per_file: true,
        }
    }
}

/// How one event data field is filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// The column it comes from.
    pub column: String,
    /// The kind of value (default `text`).
    #[serde(default)]
    pub kind: FieldKind,
    /// Chrono format for `date` and `timestamp` (default: the mapping's `date_format`, and
    /// `<date_format> %H:%M` for timestamps).
    #[serde(default)]
    pub format: Option<String>,
    /// Cell value (trimmed, case-insensitive) → value put in the event; when given, a value
    /// not listed rejects the row.
    #[serde(default)]
    pub codes: BTreeMap<String, String>,
    /// Value used when the cell is empty.
    #[serde(default)]
    pub default: Option<String>,
}

/// The kind of a field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    /// A string.
    #[default]
    Text,
    /// A date, written `YYYY-MM-DD`.
    Date,
    /// A date-time in UK local time, written RFC 3339.
    Timestamp,
    /// A decimal number.
    Number,
    /// A whole number.
    Integer,
    /// `Y`/`Yes`/`true`/`1` or `N`/`No`/`false`/`0`.
    Boolean,
}

/// Why a mapping file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("cannot read mapping {path}: {error}")]
    Read {
        /// The mapping file.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
    /// Not valid TOML or unknown keys.
    #[error("mapping {path}: {error}")]
    Toml {
        /// The mapping file.
        path: PathBuf,
        /// The TOML error (naming the key).
        error: toml::de::Error,
    },
    /// Valid TOML, inconsistent mapping.
    #[error("mapping {path}: {message}")]
    Invalid {
        /// The mapping file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The target of an event value: a catalogue type or "record nothing".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Type(EventType),
    Skip,
}

fn parse_target(s: &str) -> Option<Target> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("skip") {
        return Some(Target::Skip);
    }
    EventType::parse(s)
        .or_else(|| EventType::parse(&format!("handover.{s}.v1")))
        .map(Target::Type)
}

fn format_ok(f: &str) -> bool {
    !f.is_empty() && !StrftimeItems::new(f).any(|i| matches!(i, Item::Error))
}

/// The data properties of an event type, from its JSON Schema.
fn data_fields(t: EventType) -> Vec<String> {
    serde_json::to_value(t.data_schema())
        .ok()
        .and_then(|s| {
            s.get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
        })
        .unwrap_or_default()
}

impl Mapping {
    /// Parses and checks a mapping from TOML text; `path` is for messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Mapping, MappingError> {
        let m: Mapping = toml::from_str(text).map_err(|error| MappingError::Toml {
            path: path.to_owned(),
            error,
        })?;
        m.check().map_err(|message| MappingError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(m)
    }

    /// Reads a mapping file.
    pub fn load(path: &Path) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(path).map_err(|error| MappingError::Read {
            path: path.to_owned(),
            error,
        })?;
        Mapping::from_toml(&text, path)
    }

    /// The columns the mapping reads for the person, the time, the event type and the row
    /// key: without one of them no row can be read as meant.
    fn key_columns(&self) -> Vec<&str> {
        let mut c: Vec<&str> = Vec::new();
        c.extend(self.person.nhs_number.as_deref());
        c.extend(self.person.local_id.as_ref().map(|l| l.column.as_str()));
        c.push(&self.time.column);
        c.extend(self.event.column.as_deref());
        c.extend(self.id.columns.iter().map(String::as_str));
        c
    }

    /// Every column the mapping reads.
    fn columns(&self) -> Vec<&str> {
        let mut c = self.key_columns();
        c.extend(self.fields.values().map(|f| f.column.as_str()));
        c
    }

    /// The event types rows can become.
    pub fn event_types(&self) -> Vec<EventType> {
        let mut v: Vec<EventType> = self
            .event
            .event_type
            .iter()
            .chain(self.event.values.values())
            .filter_map(|s| match parse_target(s) {
                Some(Target::Type(t)) => Some(t),
                _ => None,
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn check(&self) -> Result<(), String> {
        match (&self.event.event_type, &self.event.column) {
            (Some(_), Some(_)) => return Err("[event] has both type and column: give one".into()),
            (None, None) => return Err("[event] needs type (fixed) or column (with values)".into()),
            (None, Some(_)) if self.event.values.is_empty() => {
                return Err("[event] column needs values (column value = event type)".into())
            }
            _ => {}
        }
        for t in self
            .event
            .event_type
            .iter()
            .chain(self.event.values.values())
        {
            if parse_target(t).is_none() {
                return Err(format!("[event] {t:?} is not an event type of the catalogue (e.g. care-package.requested) or skip"));
            }
        }
        if self.person.nhs_number.is_none() && self.person.local_id.is_none() {
            return Err("[person] needs nhs_number or local_id (or both)".into());
        }
        if !self.id.per_file && self.id.columns.is_empty() {
            return Err("[id] per_file = false needs columns".into());
        }
        if !format_ok(&self.date_format) {
            return Err(format!(
                "date_format {:?} is not a valid chrono format",
                self.date_format
            ));
        }
        if let Some(f) = &self.time.format {
            if !format_ok(f) {
                return Err(format!("[time] format {f:?} is not a valid chrono format"));
            }
        }
        let types = self.event_types();
        let known: Vec<String> = types.iter().flat_map(|t| data_fields(*t)).collect();
        for (name, rule) in &self.fields {
            if name == "local_id" {
                return Err("fields.local_id: the local id comes from [person] local_id".into());
            }
            if !types.is_empty() && !known.contains(name) {
                return Err(format!(
                    "fields.{name}: none of the mapping's event types ({}) has this field",
                    types
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(f) = &rule.format {
                if !format_ok(f) {
                    return Err(format!(
                        "fields.{name}: format {f:?} is not a valid chrono format"
                    ));
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Translation (pure)
// ---------------------------------------------------------------------------------------------

/// One row of a dropped file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Where it is: the line number in a CSV file (the header is line 1), the 1-based position
    /// in a JSON array.
    pub number: u64,
    /// Column name → cell text, in file order.
    pub cells: Vec<(String, String)>,
    /// The row as it appeared (a CSV line, or a JSON object), for the rejects file.
    pub original: String,
    /// Keys of a JSON row whose values are arrays or objects (their cells are empty): an
    /// error only when the mapping reads one of them.
    pub nested: Vec<String>,
}

impl Row {
    /// The trimmed cell of `column` (case-insensitive); `None` when absent or empty.
    pub fn get(&self, column: &str) -> Option<&str> {
        self.cells
            .iter()
            .find(|(c, _)| c.trim().eq_ignore_ascii_case(column.trim()))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }
}

/// Why a row was rejected: one line of the rejects file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The column at fault (empty when it is the row as a whole).
    pub column: String,
    /// What is wrong. Never quotes an NHS number.
    pub reason: String,
}

fn row_err(column: &str, reason: impl Into<String>) -> RowError {
    RowError {
        column: column.to_owned(),
        reason: reason.into(),
    }
}

/// 12 hex digits of a digest of a row's cells (column names lower-cased and values trimmed,
/// in column order), so that quoting, line endings and key order do not change it.
fn row_digest(row: &Row) -> String {
    let mut cells: Vec<(String, &str)> = row
        .cells
        .iter()
        .map(|(c, v)| (c.trim().to_lowercase(), v.trim()))
        .collect();
    cells.sort();
    let mut h = Sha256::new();
    for (c, v) in cells {
        h.update(c.as_bytes());
        h.update([0x1f]);
        h.update(v.as_bytes());
        h.update([0x1e]);
    }
    hex::encode(&h.finalize()[..6])
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..6])
}

/// Years a date of these exports can have. chrono's `%Y` also reads one to three digits, so
/// `24/11/26` under `%d/%m/%Y` would be the year 26: refused instead.
const YEARS: std::ops::RangeInclusive<i32> = 1900..=2200;

/// A date cell in `fmt`, with a plausible year; also as Excel writes a date column's cells
/// when it exports them as date-times (`20/11/2026 00:00`, midnight), and in ISO 8601
/// (`2026-11-20`), which no day-first or month-first format can be confused with.
fn parse_date(cell: &str, fmt: &str) -> Option<NaiveDate> {
    let plausible = |d: NaiveDate| YEARS.contains(&d.year()).then_some(d);
    let day = [" 00:00:00", " 00:00", "T00:00:00", "T00:00"]
        .iter()
        .find_map(|midnight| cell.strip_suffix(midnight))
        .unwrap_or(cell);
    [cell, day]
        .iter()
        .find_map(|c| NaiveDate::parse_from_str(c, fmt).ok().and_then(plausible))
        .or_else(|| {
            NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .ok()
                .and_then(plausible)
        })
}

/// Date-time layouts read as UK local time whatever the mapping's format says: ISO 8601
/// without an offset, as databases and pandas export them.
const ISO_LOCAL: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];

/// A time cell: in `fmt` (UK local time, unless `fmt` reads an offset with `%z` or ends in
/// a literal `Z`, UTC); else an RFC 3339 time with its own offset (`…T10:05:00Z`); else a
/// date alone in `fmt` or `date_fmt`, local midnight.
fn parse_local(cell: &str, fmt: &str, date_fmt: &str) -> Option<Timestamp> {
    let plausible = |t: Timestamp| YEARS.contains(&t.0.year()).then_some(t);
    if fmt.contains("%z") || fmt.contains("%:z") || fmt.contains("%#z") {
        if let Ok(dt) = chrono::DateTime::parse_from_str(cell, fmt) {
            return plausible(Timestamp(dt));
        }
    } else if let Some(bare) = fmt.strip_suffix('Z').filter(|f| !f.ends_with('%')) {
        if let Some(dt) = cell
            .strip_suffix(['Z', 'z'])
            .and_then(|c| NaiveDateTime::parse_from_str(c, bare).ok())
        {
            return plausible(Timestamp(dt.and_utc().fixed_offset()));
        }
    } else if let Ok(dt) = NaiveDateTime::parse_from_str(cell, fmt) {
        return plausible(Timestamp::from_london(dt));
    } else if let Some(dt) = fmt
        .ends_with("%M")
        .then(|| NaiveDateTime::parse_from_str(cell, &format!("{fmt}:%S")).ok())
        .flatten()
    {
        // Seconds the format leaves out (a spreadsheet's `22/11/2026 10:05:00`).
        return plausible(Timestamp::from_london(dt));
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(cell) {
        return plausible(Timestamp(dt));
    }
    // The mapping's date with a time after it (a date column exported with its times), or
    // ISO 8601 without an offset.
    let with_time = [format!("{date_fmt} %H:%M:%S"), format!("{date_fmt} %H:%M")];
    if let Some(dt) = with_time
        .iter()
        .map(String::as_str)
        .chain(ISO_LOCAL.iter().copied())
        .find_map(|f| NaiveDateTime::parse_from_str(cell, f).ok())
    {
        return plausible(Timestamp::from_london(dt));
    }
    [fmt, date_fmt]
        .iter()
        .find_map(|f| parse_date(cell, f))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(Timestamp::from_london)
}

/// An NHS number cell as spreadsheets write it: Excel's text marker (`'943…`), a formula
/// (`="943…"`) or non-breaking spaces taken off.
fn clean_nhs_cell(cell: &str) -> String {
    let c = cell.trim().trim_start_matches('\'');
    let c = c
        .strip_prefix("=\"")
        .and_then(|c| c.strip_suffix('"'))
        .unwrap_or(c);
    c.replace(['\u{A0}', '\u{202F}'], " ")
}

/// Translates one row into its event (none for a `skip` row), or lists every problem.
///
/// `file_name` is the dropped file's name (part of the event id unless the mapping's
/// `per_file` is false); `source` the CloudEvents source.
pub fn translate_row(
    mapping: &Mapping,
    source: &str,
    file_name: &str,
    row: &Row,
) -> Result<Vec<Event>, Vec<RowError>> {
    let mut errors = Vec::new();
    // A JSON value the mapping reads must be a string, number or boolean; nested values
    // under keys it does not read (an audit block, tags) are none of its business.
    for key in &row.nested {
        if mapping
            .columns()
            .iter()
            .any(|c| c.trim().eq_ignore_ascii_case(key.trim()))
        {
            errors.push(row_err(
                key,
                "is nested: values must be strings, numbers or booleans",
            ));
        }
    }
    // Event type.
    let target = match (&mapping.event.event_type, &mapping.event.column) {
        (Some(t), _) => parse_target(t),
        (None, Some(col)) => match row.get(col) {
            None => {
                errors.push(row_err(col, "is empty: it chooses the event type"));
                None
            }
            Some(v) => {
                let found = mapping
                    .event
                    .values
                    .iter()
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case(v))
                    .and_then(|(_, t)| parse_target(t));
                if found.is_none() {
                    let known: Vec<&str> =
                        mapping.event.values.keys().map(String::as_str).collect();
                    errors.push(row_err(
                        col,
                        format!("unknown value {v:?}: expected one of {}", known.join(", ")),
                    ));
                }
                found
            }
        },
        (None, None) => None,
    };
    if target == Some(Target::Skip) {
        return Ok(Vec::new());
    }
    // Time.
    let time_fmt = mapping
        .time
        .format
        .as_deref()
        .unwrap_or(&mapping.date_format);
    let time = match row.get(&mapping.time.column) {
        None => {
            errors.push(row_err(
                &mapping.time.column,
                "is empty: the date of the event is required",
            ));
            None
        }
        Some(cell) => {
            let t = parse_local(cell, time_fmt, &mapping.date_format);
            if t.is_none() {
                errors.push(row_err(
                    &mapping.time.column,
                    format!("{cell:?} is not a date in the format {time_fmt}"),
                ));
            }
            t
        }
    };
    // Person.
    let mut subject = None;
    let mut local_id = None;
    let nhs_cell = mapping
        .person
        .nhs_number
        .as_deref()
        .and_then(|c| row.get(c));
    match (nhs_cell, &mapping.person.nhs_number) {
        (Some(cell), Some(col)) => {
            match NhsNumber::parse(&clean_nhs_cell(cell)) {
                Ok(n) => subject = Some(n),
                Err(e) => errors.push(row_err(col, format!("not a valid NHS number: {e}"))),
            }
            // Both: the row links the council's id to the NHS number (the projection takes
            // an event naming the person both ways as a person.linked), so the council's
            // events known only by its id join the NHS number's journey.
            if let Some(l) = &mapping.person.local_id {
                if let Some(v) = row.get(&l.column) {
                    local_id = Some(json!({ "system": l.system, "value": v }));
                }
            }
        }
        _ => match &mapping.person.local_id {
            Some(l) => match row.get(&l.column) {
                Some(v) => local_id = Some(json!({ "system": l.system, "value": v })),
                None => errors.push(row_err(
                    mapping.person.nhs_number.as_deref().unwrap_or(&l.column),
                    "no NHS number and no local id: the row names nobody",
                )),
            },
            None => errors.push(row_err(
                mapping.person.nhs_number.as_deref().unwrap_or(""),
                "is empty: the NHS number is required",
            )),
        },
    }
    // Row key.
    let key = if mapping.id.columns.is_empty() {
        Some(format!("r{}-{}", row.number, short_hash(&row.original)))
    } else {
        let parts: Vec<&str> = mapping
            .id
            .columns
            .iter()
            .map(|c| row.get(c).unwrap_or(""))
            .collect();
        if parts.iter().all(|p| p.is_empty()) {
            errors.push(row_err(
                &mapping.id.columns[0],
                "is empty: it identifies the row",
            ));
            None
        } else {
            Some(parts.join("|"))
        }
    };
    let Some(Target::Type(ty)) = target else {
        return Err(errors);
    };
    // Data.
    let allowed = data_fields(ty);
    let mut data = Map::new();
    for (name, rule) in mapping.fields.iter().filter(|(n, _)| allowed.contains(n)) {
        let Some(cell) = row.get(&rule.column).or(rule.default.as_deref()) else {
            continue;
        };
        let coded = if rule.codes.is_empty() {
            cell.to_owned()
        } else {
            match rule
                .codes
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(cell))
            {
                Some((_, v)) => v.clone(),
                None => {
                    let known: Vec<&str> = rule.codes.keys().map(String::as_str).collect();
                    errors.push(row_err(
                        &rule.column,
                        format!(
                            "unknown code {cell:?}: expected one of {}",
                            known.join(", ")
                        ),
                    ));
                    continue;
                }
            }
        };
        let value = match rule.kind {
            FieldKind::Text => Some(Value::String(coded.clone())),
            FieldKind::Date => {
                let f = rule.format.as_deref().unwrap_or(&mapping.date_format);
                parse_date(&coded, f).map(|d| d.format("%Y-%m-%d").to_string().into())
            }
            FieldKind::Timestamp => {
                let f = rule
                    .format
                    .clone()
                    .unwrap_or_else(|| format!("{} %H:%M", mapping.date_format));
                parse_local(&coded, &f, &mapping.date_format).map(|t| t.to_rfc3339().into())
            }
            FieldKind::Number => coded
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(|f| json!(f)),
            // `3.0` too: what pandas writes for an integer column with gaps (the event API
            // takes integral numbers the same way).
            FieldKind::Integer => coded
                .parse::<u64>()
                .ok()
                .or_else(|| {
                    coded
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.fract() == 0.0 && (0.0..9.0e15).contains(f))
                        .map(|f| f as u64)
                })
                .map(|n| json!(n)),
            FieldKind::Boolean => match coded.to_ascii_lowercase().as_str() {
                "y" | "yes" | "true" | "1" => Some(Value::Bool(true)),
                "n" | "no" | "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
        };
        match value {
            Some(v) => {
                data.insert(name.clone(), v);
            }
            None => {
                let what = match rule.kind {
                    FieldKind::Date => format!(
                        "a date in the format {}",
                        rule.format.as_deref().unwrap_or(&mapping.date_format)
                    ),
                    FieldKind::Timestamp => "a date and time".to_owned(),
                    FieldKind::Number => "a number".to_owned(),
                    FieldKind::Integer => "a whole number".to_owned(),
                    FieldKind::Boolean => "yes or no".to_owned(),
                    FieldKind::Text => "text".to_owned(),
                };
                errors.push(row_err(&rule.column, format!("{coded:?} is not {what}")));
            }
        }
    }
    if let Some(l) = local_id {
        data.insert("local_id".into(), l);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let (Some(time), Some(key)) = (time, key) else {
        return Err(errors);
    };
    let name = ty
        .as_str()
        .trim_start_matches("handover.")
        .trim_end_matches(".v1");
    // With key columns, a digest of the row's cells too: the same row read again (a
    // re-dropped file, a cumulative export) has the same id and is stored once, while a
    // corrected row under the same key is new information, not a duplicate.
    let key = if mapping.id.columns.is_empty() {
        key
    } else {
        format!("{key}#{}", row_digest(row))
    };
    let mut id = if mapping.id.per_file {
        format!("{file_name}/{key}/{name}")
    } else {
        format!("{key}/{name}")
    };
    if id.len() > 256 {
        id = format!(
            "{}/{name}",
            hex::encode(&Sha256::digest(id.as_bytes())[..16])
        );
    }
    let mut ce = json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": ty.as_str(),
        "time": time.to_rfc3339(),
        "data": Value::Object(data),
    });
    if let Some(n) = subject {
        ce["subject"] = n.as_string().into();
    }
    Event::from_json(ce).map(|e| vec![e]).map_err(|errs| {
        errs.0
            .into_iter()
            .map(|f| {
                // `/data/<field>...`, or `/data` with `"<field>" is a required property`.
                let missing = (f.pointer == "/data")
                    .then(|| {
                        f.message
                            .strip_prefix('"')?
                            .split_once("\" is a required property")
                            .map(|(n, _)| n)
                    })
                    .flatten();
                let field = f
                    .pointer
                    .strip_prefix("/data/")
                    .map(|p| p.split('/').next().unwrap_or(p))
                    .or(missing);
                let column = match (f.pointer.as_str(), field) {
                    (_, Some(field)) => mapping
                        .fields
                        .get(field)
                        .map(|r| r.column.clone())
                        .unwrap_or_else(|| field.to_owned()),
                    ("/subject", _) => mapping.person.nhs_number.clone().unwrap_or_default(),
                    ("/time", _) => mapping.time.column.clone(),
                    _ => String::new(),
                };
                let reason = if f.pointer == "/data" && f.message.contains("missing field") {
                    format!(
                        "the {} event is missing a required value: {}",
                        ty.as_str(),
                        f.message
                    )
                } else {
                    f.message
                };
                RowError { column, reason }
            })
            .collect()
    })
}

/// Why a file could not be read as rows at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FileFormatError(pub String);

/// A row that could not be read as cells (wrong number of fields, a nested JSON value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRow {
    /// Where it is, as [`Row::number`].
    pub number: u64,
    /// The row as it appeared.
    pub original: String,
    /// What is wrong.
    pub reason: String,
}

/// A row, or why it could not be read.
pub type RowResult = Result<Row, UnreadableRow>;

/// Splits a file's bytes into rows.
pub fn read_rows(format: FileFormat, bytes: &[u8]) -> Result<Vec<RowResult>, FileFormatError> {
    let text = decode_text(bytes)?;
    match format {
        FileFormat::Csv => read_csv(&text),
        FileFormat::Json => read_json(&text),
    }
}

/// A CSV file's header (the column names, trimmed), when it has one.
pub fn csv_header(bytes: &[u8]) -> Option<Vec<String>> {
    let text = decode_text(bytes).ok()?;
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr.headers().ok()?;
    Some(headers.iter().map(|h| h.trim().to_owned()).collect())
}

/// A file's text: UTF-8 (a byte order mark dropped), each byte that is not UTF-8 read as
/// Windows-1252; UTF-16 and binary files are refused.
fn decode_text(bytes: &[u8]) -> Result<String, FileFormatError> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(FileFormatError(
            "the file is UTF-16 (Excel's \"Unicode text\"): save it as CSV UTF-8".into(),
        ));
    }
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return Err(FileFormatError(
            "the file is binary, not text (a spreadsheet saved under a .csv or .json name?)".into(),
        ));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // Windows-1252 exports (Excel's "CSV" on Windows) are read as such rather than refused;
    // a stray Windows-1252 byte in a UTF-8 file leaves the rest of it UTF-8.
    Ok(handover_hl7::utf8_or_windows_1252(bytes).into_owned())
}

fn csv_line(fields: &[&str]) -> String {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let _ = w.write_record(fields);
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .trim_end_matches(['\r', '\n'])
        .to_owned()
}

/// The 1-based line of a byte offset in a text, for offsets visited in increasing order.
/// (The csv reader's own line count lags by one at a `\r\n` and after a blank line.)
struct LineCounter<'t> {
    text: &'t [u8],
    at: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> Self {
        LineCounter {
            text: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    /// The line a record starting at `byte` is on (line breaks before its first character
    /// are not part of it).
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut start = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        while start < self.text.len() && matches!(self.text[start], b'\r' | b'\n') {
            start += 1;
        }
        if start >= self.at {
            self.line += self.text[self.at..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            self.at = start;
        }
        self.line
    }
}

fn read_csv(text: &str) -> Result<Vec<RowResult>, FileFormatError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| FileFormatError(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(FileFormatError("the file has no header row".into()));
    }
    let mut out = Vec::new();
    let mut lines = LineCounter::new(text);
    // The last record: where it starts (byte, line) and whether a field of it spans lines.
    let mut last: Option<(u64, u64, bool)> = None;
    for rec in rdr.records() {
        match rec {
            Ok(r) => {
                let line = r.position().map_or(0, |p| lines.line_at(p.byte()));
                last = Some((
                    r.position().map_or(0, csv::Position::byte),
                    line,
                    r.iter().any(|f| f.contains('\n')),
                ));
                let mut fields: Vec<&str> = r.iter().collect();
                // Excel's ghost rows (every cell empty, or only spaces): nothing to read.
                if fields.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                // A trailing delimiter on data lines but not on the header: empty cells
                // past the header's columns are not data.
                while fields.len() > headers.len()
                    && fields.last().is_some_and(|f| f.trim().is_empty())
                {
                    fields.pop();
                }
                let original = csv_line(&fields);
                if fields.len() != headers.len() {
                    out.push(Err(UnreadableRow {
                        number: line,
                        original,
                        reason: format!(
                            "has {} fields, the header has {}",
                            fields.len(),
                            headers.len()
                        ),
                    }));
                    continue;
                }
                out.push(Ok(Row {
                    number: line,
                    cells: headers
                        .iter()
                        .cloned()
                        .zip(fields.iter().map(|s| s.to_string()))
                        .collect(),
                    original,
                    nested: Vec::new(),
                }));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
                last = None;
                out.push(Err(UnreadableRow {
                    number: line,
                    original: String::new(),
                    reason: format!("unreadable CSV: {e}"),
                }));
            }
        }
    }
    // A quote opened and never closed reads every later line into one cell of that row:
    // the rows after it would be lost without a word. Only the last record can hold it.
    if let Some((byte, line, true)) = last {
        let from = usize::try_from(byte).unwrap_or(usize::MAX);
        if text.as_bytes().get(from..).is_some_and(ends_inside_quotes) {
            return Err(FileFormatError(format!(
                "a quoted field in the row on line {line} is never closed, so every line after \
                 it would be read into that one cell: close the quote (a quote inside a quoted \
                 field is written twice, \"\"), or export the file again"
            )));
        }
    }
    Ok(out)
}

/// Whether CSV `text` (from the start of a record) ends inside a quoted field, read as the
/// csv reader does: a quote opens a field only as its first character, and `""` inside
/// one is a quote.
fn ends_inside_quotes(b: &[u8]) -> bool {
    let (mut i, mut quoted, mut field_start) = (0, false, true);
    while i < b.len() {
        let c = b[i];
        if quoted {
            if c == b'"' {
                if b.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                quoted = false;
            }
            field_start = false;
        } else {
            match c {
                b'"' if field_start => quoted = true,
                b',' | b'\n' | b'\r' => {
                    field_start = true;
                    i += 1;
                    continue;
                }
                _ => {}
            }
            field_start = false;
        }
        i += 1;
    }
    quoted
}

/// A JSON row by its number: the value, or why it is not one and the line as written.
type JsonItem = (u64, Result<Value, (String, String)>);

fn read_json(text: &str) -> Result<Vec<RowResult>, FileFormatError> {
    let items: Vec<JsonItem> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => (1..).zip(items.into_iter().map(Ok)).collect(),
        Ok(_) => return Err(FileFormatError("expected a JSON array of objects".into())),
        // JSON Lines (one object per line, as `handover publish` also takes): each line a
        // row, numbered by its line.
        Err(_) if text.trim_start().starts_with('{') && text.trim().lines().count() > 1 => text
            .lines()
            .zip(1..)
            .filter(|(l, _)| !l.trim().is_empty())
            .map(|(l, n)| {
                (
                    n,
                    serde_json::from_str::<Value>(l)
                        .map_err(|e| (format!("not valid JSON: {e}"), l.to_owned())),
                )
            })
            .collect(),
        Err(e) => return Err(FileFormatError(format!("not valid JSON: {e}"))),
    };
    let mut out = Vec::with_capacity(items.len());
    for (n, item) in items {
        let item = match item {
            Ok(v) => v,
            Err((reason, original)) => {
                out.push(Err(UnreadableRow {
                    number: n,
                    original,
                    reason,
                }));
                continue;
            }
        };
        let original = item.to_string();
        let Value::Object(obj) = item else {
            out.push(Err(UnreadableRow {
                number: n,
                original,
                reason: "is not a JSON object".into(),
            }));
            continue;
        };
        let mut cells = Vec::with_capacity(obj.len());
        let mut nested = Vec::new();
        for (k, v) in obj {
            let s = match v {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    nested.push(k.clone());
                    String::new()
                }
            };
            cells.push((k, s));
        }
        out.push(Ok(Row {
            number: n,
            cells,
            original,
            nested,
        }));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// Counters of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounters {
    /// Files processed and moved to `done/`.
    pub files_done: u64,
    /// Files that could not be read as rows at all (moved to `rejected/`).
    pub files_rejected: u64,
    /// Data rows read.
    pub rows: u64,
    /// Rows whose events were stored (duplicates included).
    pub accepted: u64,
    /// Rows rejected (listed in an errors file).
    pub rejected: u64,
    /// Rows the mapping says to skip.
    pub skipped: u64,
    /// Events the log already held (a re-dropped file, a restart mid-file).
    pub duplicates: u64,
    /// Failed hand-overs to the event log (the file is retried).
    pub publish_failures: u64,
}

/// The adapter's counters, per source name.
#[derive(Debug, Default)]
pub struct FileDropMetrics {
    sources: Mutex<BTreeMap<String, SourceCounters>>,
}

impl FileDropMetrics {
    /// The current values.
    pub fn snapshot(&self) -> BTreeMap<String, SourceCounters> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, source: &str, f: impl FnOnce(&mut SourceCounters)) {
        let mut m = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        f(m.entry(source.to_owned()).or_default());
    }

    /// The counters in the Prometheus text format, names prefixed `handover_filedrop_`,
    /// labelled by source name (from configuration, never from file content).
    pub fn render_prometheus(&self) -> String {
        let snap = self.snapshot();
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', " ")
        };
        let mut out = String::new();
        type Series = Vec<(&'static str, fn(&SourceCounters) -> u64)>;
        let families: [(&str, &str, Series); 4] = [
            (
                "files_total",
                "Dropped files by outcome.",
                vec![
                    ("done", |c| c.files_done),
                    ("rejected", |c| c.files_rejected),
                ],
            ),
            (
                "rows_total",
                "Rows read by outcome.",
                vec![
                    ("accepted", |c| c.accepted),
                    ("rejected", |c| c.rejected),
                    ("skipped", |c| c.skipped),
                ],
            ),
            (
                "duplicates_total",
                "Events the log already held.",
                vec![("", |c| c.duplicates)],
            ),
            (
                "publish_failures_total",
                "Failed hand-overs to the event log.",
                vec![("", |c| c.publish_failures)],
            ),
        ];
        for (name, help, series) in families {
            out.push_str(&format!(
                "# HELP handover_filedrop_{name} {help}\n# TYPE handover_filedrop_{name} counter\n"
            ));
            for (source, c) in &snap {
                for (result, get) in &series {
                    let result_label = if result.is_empty() {
                        String::new()
                    } else {
                        format!(",result=\"{result}\"")
                    };
                    out.push_str(&format!(
                        "handover_filedrop_{name}{{source=\"{}\"{result_label}}} {}\n",
                        esc(source),
                        get(c)
                    ));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Processing
// ---------------------------------------------------------------------------------------------

/// What became of one file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Data rows read.
    pub rows: u64,
    /// Rows whose events were stored (duplicates included).
    pub accepted: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Rows skipped by the mapping.
    pub skipped: u64,
    /// Events the log already held.
    pub duplicates: u64,
}

/// Why a file was not finished.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The event log did not store the events; the file stays and is retried.
    #[error("event log: {0}")]
    Sink(#[from] SinkError),
    /// Reading, writing or moving files failed; the file stays and is retried.
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
    /// The file looks still being written (it changed while it was read, or it stops in
    /// the middle of a row); nothing was published, and it is read again later.
    #[error("still being written: {0}")]
    Unsettled(&'static str),
}

/// How long a file that stops in the middle of a row (no final line break; a JSON array
/// not closed) is waited for before it is read as it is: some exports end without a line
/// break, and a writer that pauses longer than `settle_ms` mid-row must not be cut short.
pub const UNFINISHED_GRACE: Duration = Duration::from_secs(30);

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileDropError {
    /// A source's mapping file is missing or invalid.
    #[error("file drop source {source_name:?}: {error}")]
    Mapping {
        /// The source's name.
        source_name: String,
        /// The problem.
        error: MappingError,
    },
    /// A directory could not be created.
    #[error("file drop source {source_name:?}: cannot create {path}: {error}")]
    Dir {
        /// The source's name.
        source_name: String,
        /// The directory.
        path: PathBuf,
        /// The IO error.
        error: std::io::Error,
    },
}

/// A writer of errors files: `row,column,reason,original_row`.
fn errors_csv(lines: &[(u64, String, String, String)]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["row", "column", "reason", "original_row"]);
    for (row, column, reason, original) in lines {
        let _ = w.write_record([row.to_string().as_str(), column, reason, original]);
    }
    w.into_inner().unwrap_or_default()
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-write");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

/// Whether a file's bytes end where a complete file would: a CSV with a line break, a JSON
/// array with `]`.
fn looks_finished(format: FileFormat, bytes: &[u8]) -> bool {
    match format {
        // A line break inside a quoted field is not the end of a row.
        FileFormat::Csv => {
            bytes.is_empty()
                || (matches!(bytes.last(), Some(b'\n' | b'\r')) && !ends_inside_quotes(bytes))
        }
        FileFormat::Json => bytes
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_none_or(|&b| b == b']' || b == b'}'),
    }
}

/// Whether the file holds anything past a header: a CSV line after the first non-blank
/// one, or a JSON value other than an empty array. Whitespace and a byte order mark are
/// nothing.
fn has_data_rows(format: FileFormat, bytes: &[u8]) -> bool {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lines = bytes
        .split(|b| *b == b'\n' || *b == b'\r')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    match format {
        FileFormat::Csv => lines.nth(1).is_some(),
        FileFormat::Json => {
            let text: Vec<u8> = bytes
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            !text.is_empty() && text != b"[]"
        }
    }
}

/// The columns the mapping must find in a CSV header (the NHS number or local id, the
/// time, the event type and the row key) that the header lacks, each named once.
fn missing_columns(mapping: &Mapping, header: &[String]) -> Vec<String> {
    columns_named(mapping.key_columns(), header, |times| times == 0)
}

/// The columns the mapping reads that the header names more than once (case-insensitive),
/// each named once: which of two cells is meant cannot be known.
fn repeated_columns(mapping: &Mapping, header: &[String]) -> Vec<String> {
    columns_named(mapping.columns(), header, |times| times > 1)
}

/// Of `columns`, those the header names a number of times `wrong` holds for (the header's
/// names compared case-insensitively), each quoted once.
fn columns_named(
    columns: Vec<&str>,
    header: &[String],
    wrong: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in columns {
        let named = format!("{c:?}");
        let times = header
            .iter()
            .filter(|h| h.eq_ignore_ascii_case(c.trim()))
            .count();
        if wrong(times) && !out.contains(&named) {
            out.push(named);
        }
    }
    out
}

/// For a JSON file: when no record has the key the mapping reads the NHS number from, and
/// some record has a key the mapping does not read whose name says NHS number
/// ([`names_an_nhs_number`]), why the file is refused.
fn renamed_nhs_number_key(mapping: &Mapping, rows: &[RowResult]) -> Option<String> {
    let wanted = mapping.person.nhs_number.as_deref()?.trim();
    let read = mapping.columns();
    let mut other: Option<&str> = None;
    for row in rows.iter().flatten() {
        for (key, _) in &row.cells {
            let key = key.trim();
            if key.eq_ignore_ascii_case(wanted) {
                return None;
            }
            let unmapped = !read.iter().any(|c| c.trim().eq_ignore_ascii_case(key));
            if other.is_none() && unmapped && names_an_nhs_number(key) {
                other = Some(key);
            }
        }
    }
    other.map(|o| {
        format!(
            "no record has the key {wanted:?}, which the mapping reads the NHS number from, and records have {o:?}: was the export changed? Read on, every row would be filed under its local id alone; map the key the export now uses"
        )
    })
}

/// Whether a key's name says it holds an NHS number (`NHS No.`, `nhs_number`, `NHSNumber`,
/// `client_nhs_no`, `NHS`), not something else about the NHS (`NHS Trust`).
fn names_an_nhs_number(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    matches!(k.as_str(), "nhs" | "nhsid")
        || ["nhsno", "nhsnum", "nhsnbr"].iter().any(|p| k.contains(p))
}

/// A file refused whole: where it and its errors file go.
struct WholeFile<'a> {
    path: &'a Path,
    errors_path: &'a Path,
    rejected_dir: &'a Path,
    file_name: &'a str,
    source: &'a str,
    metrics: &'a FileDropMetrics,
}

impl WholeFile<'_> {
    /// Writes the errors file (one line: `line`, `reason`), moves the file to `rejected/`
    /// and counts it; nothing of it was published.
    async fn file(&self, line: u64, reason: String) -> Result<FileSummary, FileError> {
        write_atomic(
            self.errors_path,
            &errors_csv(&[(line, String::new(), reason, String::new())]),
        )
        .await?;
        tokio::fs::rename(self.path, free_name(self.rejected_dir, self.file_name)).await?;
        self.metrics.update(self.source, |c| c.files_rejected += 1);
        Ok(FileSummary::default())
    }
}

/// Why a header that lacks mapped columns may: the export used another delimiter.
fn delimiter_hint(header: &[String]) -> &'static str {
    match header {
        [one] if one.contains(';') => {
            " (the header is one column with semicolons in it: export the file comma-separated)"
        }
        [one] if one.contains('\t') => {
            " (the header is one column with tabs in it: export the file comma-separated)"
        }
        _ => "",
    }
}

/// `dir/<name>`, or `dir/<stem>.<n>.<ext>` when taken.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((s, e)) => (s, format!(".{e}")),
        None => (name, String::new()),
    };
    (1u32..)
        .map(|n| dir.join(format!("{stem}.{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// Processes one file of `src` completely: translate, publish in chunks, write the errors
/// file, move to `done/` (or, when it cannot be read as rows, to `rejected/`). Returns after
/// the file was moved; an `Err` leaves it in place to be retried.
pub async fn process_file(
    src: &FileSource,
    mapping: &Mapping,
    path: &Path,
    sink: &dyn EventSink,
    chunk_rows: usize,
    metrics: &FileDropMetrics,
) -> Result<FileSummary, FileError> {
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let done_dir = src.dir.join("done");
    let rejected_dir = src.dir.join("rejected");
    tokio::fs::create_dir_all(&done_dir).await?;
    tokio::fs::create_dir_all(&rejected_dir).await?;
    let before = tokio::fs::metadata(path).await?;
    let bytes = tokio::fs::read(path).await?;
    let after = tokio::fs::metadata(path).await?;
    if before.len() != after.len()
        || before.modified().ok() != after.modified().ok()
        || after.len() != bytes.len() as u64
    {
        return Err(FileError::Unsettled("it changed while it was read"));
    }
    let age = after
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age < UNFINISHED_GRACE && !looks_finished(src.format, &bytes) {
        return Err(FileError::Unsettled("it stops in the middle of a row"));
    }
    // A writer that creates its file, then runs its query (sqlcmd -o, SSIS), leaves it
    // empty, or with only its header, for as long as the query takes: such a file is
    // waited for as an unfinished one is, not read as an export of nothing.
    if age < UNFINISHED_GRACE && !has_data_rows(src.format, &bytes) {
        return Err(FileError::Unsettled("it has no rows yet"));
    }
    // Each errors file has a name of its own: an export that reuses one file name every
    // day keeps each day's errors.
    let errors_path = free_name(&rejected_dir, &format!("{file_name}.errors.csv"));
    let reject = WholeFile {
        path,
        errors_path: &errors_path,
        rejected_dir: &rejected_dir,
        file_name: &file_name,
        source: &src.name,
        metrics,
    };
    let rows = match read_rows(src.format, &bytes) {
        Ok(r) => r,
        Err(e) => {
            warn!(source = %src.name, file = %file_name, error = %e, "file rejected: not readable as rows");
            return reject.file(0, e.0).await;
        }
    };
    // A column the mapping reads for the person, the time, the type or the row key must be
    // in the header: without it every row would be read without it (an NHS number column
    // renamed in the export would leave every row known by its local id only).
    if src.format == FileFormat::Csv {
        let header = csv_header(&bytes).unwrap_or_default();
        let missing = missing_columns(mapping, &header);
        let repeated = repeated_columns(mapping, &header);
        if !missing.is_empty() || !repeated.is_empty() {
            let e = if missing.is_empty() {
                format!(
                    "the header names column {} more than once: the mapping reads it, and which one is meant cannot be told (was the export changed?)",
                    repeated.join(", ")
                )
            } else {
                format!(
                    "the header has no column {}: the mapping reads it (was the export changed?){}",
                    missing.join(", "),
                    delimiter_hint(&header)
                )
            };
            warn!(source = %src.name, file = %file_name, "file rejected: mapped columns missing from the header, or named twice");
            return reject.file(1, e).await;
        }
    }
    // A JSON export has no header to check, and exporters leave out keys whose value is
    // null, so a key no record has is not by itself a renamed one. A key that no record
    // has for the NHS number, while records have another key that names an NHS number,
    // is: read on, every row would be filed under its local id only.
    if src.format == FileFormat::Json {
        if let Some(e) = renamed_nhs_number_key(mapping, &rows) {
            warn!(source = %src.name, file = %file_name, "file rejected: the NHS number's key is missing and another key looks like it");
            return reject.file(0, e).await;
        }
    }
    let mut summary = FileSummary {
        rows: rows.len() as u64,
        ..FileSummary::default()
    };
    let mut rejects = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    for row in &rows {
        match row {
            Err(u) => rejects.push((
                u.number,
                String::new(),
                u.reason.clone(),
                u.original.clone(),
            )),
            Ok(row) => match translate_row(mapping, &src.source, &file_name, row) {
                Ok(ev) if ev.is_empty() => summary.skipped += 1,
                Ok(ev) => {
                    summary.accepted += 1;
                    events.extend(ev);
                }
                Err(errs) => {
                    for e in errs {
                        rejects.push((row.number, e.column, e.reason, row.original.clone()));
                    }
                }
            },
        }
    }
    summary.rejected = rows.len() as u64 - summary.accepted - summary.skipped;
    for chunk in events.chunks(chunk_rows.max(1)) {
        match sink.publish(chunk).await {
            Ok(stored) => {
                summary.duplicates += stored.iter().filter(|s| s.duplicate).count() as u64
            }
            Err(e) => {
                metrics.update(&src.name, |c| c.publish_failures += 1);
                return Err(e.into());
            }
        }
    }
    // A writer that paused longer than settle_ms between rows may have written more while
    // this was read and published: the file is read again later (what was published is
    // recognised as duplicates by its event ids), never moved with rows unread.
    let now = tokio::fs::metadata(path).await?;
    if now.len() != after.len() || now.modified().ok() != after.modified().ok() {
        return Err(FileError::Unsettled(
            "it changed while its rows were published",
        ));
    }
    if !rejects.is_empty() {
        write_atomic(&errors_path, &errors_csv(&rejects)).await?;
    }
    tokio::fs::rename(path, free_name(&done_dir, &file_name)).await?;
    metrics.update(&src.name, |c| {
        c.files_done += 1;
        c.rows += summary.rows;
        c.accepted += summary.accepted;
        c.rejected += summary.rejected;
        c.skipped += summary.skipped;
        c.duplicates += summary.duplicates;
    });
    info!(
        source = %src.name,
        file = %file_name,
        rows = summary.rows,
        accepted = summary.accepted,
        rejected = summary.rejected,
        skipped = summary.skipped,
        duplicates = summary.duplicates,
        "file processed"
    );
    if summary.rejected > 0 {
        warn!(source = %src.name, file = %file_name, rejected = summary.rejected, "rows rejected: see the file's errors file in rejected/");
    }
    Ok(summary)
}

/// The files of `src.dir` ready to process, in name order.
pub fn ready_files(src: &FileSource, settle: Duration) -> std::io::Result<Vec<PathBuf>> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&src.dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ext_ok = name
            .rsplit_once('.')
            .is_some_and(|(_, e)| e.eq_ignore_ascii_case(src.format.extension()));
        let meta = entry.metadata()?;
        if !ext_ok || !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if age >= settle {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Watches every source's directory until `shutdown` resolves.
///
/// Loads and checks every mapping first (an `Err` names the source and the problem), then
/// polls. A file interrupted by shutdown (or by the process dying) stays in its directory and
/// is processed again from the start on the next run; its events keep their ids, so nothing
/// is stored twice.
pub async fn run(
    cfg: Arc<FileDropConfig>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<FileDropMetrics>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), FileDropError> {
    let mut sources = Vec::with_capacity(cfg.sources.len());
    for src in &cfg.sources {
        let mapping = Mapping::load(&src.mapping).map_err(|error| FileDropError::Mapping {
            source_name: src.name.clone(),
            error,
        })?;
        for d in [
            src.dir.clone(),
            src.dir.join("done"),
            src.dir.join("rejected"),
        ] {
            std::fs::create_dir_all(&d).map_err(|error| FileDropError::Dir {
                source_name: src.name.clone(),
                path: d.clone(),
                error,
            })?;
        }
        sources.push((src, mapping));
    }
    info!(sources = sources.len(), "file drop started");
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(10));
    let settle = Duration::from_millis(cfg.settle_ms);
    tokio::pin!(shutdown);
    loop {
        for (src, mapping) in &sources {
            let files = match ready_files(src, settle) {
                Ok(f) => f,
                Err(error) => {
                    warn!(source = %src.name, %error, "cannot list the drop directory");
                    continue;
                }
            };
            for path in files {
                let work =
                    process_file(src, mapping, &path, sink.as_ref(), cfg.chunk_rows, &metrics);
                tokio::select! {
                    // Dropping the work mid-file is safe: the file stays, ids are deterministic.
                    () = &mut shutdown => {
                        info!("file drop stopped");
                        return Ok(());
                    }
                    r = work => match r {
                        Err(error @ FileError::Unsettled(_)) => {
                            debug!(source = %src.name, file = %path.display(), %error, "file not read yet");
                        }
                        Err(error) => {
                            warn!(source = %src.name, file = %path.display(), %error, "file not finished; retrying at the next poll");
                            break;
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => {
                info!("file drop stopped");
                return Ok(());
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conformance::{
        assert_acks_after_durability, assert_translation_conforms, FailMode, RecordingSink,
    };
    use expect_test::{expect, Expect};

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn mapping(name: &str) -> Mapping {
        Mapping::load(&root().join("deploy/mappings").join(name)).unwrap()
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(root().join("tests/fixtures/filedrop").join(name)).unwrap()
    }

    const BROKERAGE: &str = "urn:gss:E08000035:brokerage";

    /// Every row of a fixture through `translate_row`, rendered one line per row.
    fn translate_all(m: &Mapping, file: &str, format: FileFormat) -> (Vec<Event>, String) {
        let mut out = String::new();
        let mut events = Vec::new();
        for row in read_rows(format, &fixture(file)).unwrap() {
            match row {
                Err(u) => out.push_str(&format!(
                    "row {}: unreadable: {}
",
                    u.number, u.reason
                )),
                Ok(row) => match translate_row(m, BROKERAGE, file, &row) {
                    Ok(ev) if ev.is_empty() => {
                        out.push_str(&format!("row {}: skipped\n", row.number))
                    }
                    Ok(ev) => {
                        for e in ev {
                            let subject = e
                                .subject
                                .map(|n| n.as_string())
                                .unwrap_or_else(|| "-".into());
                            out.push_str(&format!(
                                "row {}: {} {}\n  subject={subject} time={}\n  data={}\n",
                                row.number,
                                e.event_type().as_str(),
                                e.id,
                                e.time,
                                serde_json::to_string(&e.data.to_json()).unwrap()
                            ));
                            events.push(e);
                        }
                    }
                    Err(errs) => {
                        for e in errs {
                            out.push_str(&format!(
                                "row {}: rejected [{}] {}\n",
                                row.number, e.column, e.reason
                            ));
                        }
                    }
                },
            }
        }
        (events, out)
    }

    fn check(mapping_file: &str, file: &str, format: FileFormat, expect: Expect) {
        let m = mapping(mapping_file);
        let (_, rendered) = translate_all(&m, file, format);
        assert_translation_conforms(|| translate_all(&m, file, format).0);
        expect.assert_eq(&rendered);
    }

    #[test]
    fn brokerage_export() {
        check(
            "brokerage-homecare.toml",
            "brokerage_2026-11-24.csv",
            FileFormat::Csv,
            expect![[r#"
                row 2: handover.care-package.requested.v1 brokerage_2026-11-24.csv/LCC-PKG-5521|REQUESTED|24/11/2026#ed062629cd8c/care-package.requested
                  subject=9434765919 time=2026-11-24T00:00:00Z
                  data={"calls_per_day":3,"carers_per_call":1,"hours_per_week":10.5,"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"package_id":"LCC-PKG-5521","referral_id":"RR8-REF-77120","required_start":"2026-11-27","service_type":"reablement"}
                row 3: handover.care-package.sourced.v1 brokerage_2026-11-24.csv/LCC-PKG-5521|SOURCED|25/11/2026#58f09d454444/care-package.sourced
                  subject=9434765919 time=2026-11-25T00:00:00Z
                  data={"agreed_start":"2026-11-27","local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"package_id":"LCC-PKG-5521","provider":"Leeds Reablement Service (South)"}
                row 4: handover.care-package.requested.v1 brokerage_2026-11-24.csv/LCC-PKG-5522|REQUESTED|24/11/2026#a656da71ca9a/care-package.requested
                  subject=9434765927 time=2026-11-24T00:00:00Z
                  data={"calls_per_day":4,"carers_per_call":2,"hours_per_week":14.0,"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-120044"},"package_id":"LCC-PKG-5522","required_start":"2026-11-26","service_type":"home-care"}
                row 5: skipped
                row 6: handover.care-package.requested.v1 brokerage_2026-11-24.csv/LCC-PKG-5523|REQUESTED|24/11/2026#86425e9a5cf3/care-package.requested
                  subject=- time=2026-11-24T00:00:00Z
                  data={"calls_per_day":2,"carers_per_call":1,"hours_per_week":7.0,"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-120977"},"package_id":"LCC-PKG-5523","required_start":"2026-12-01","service_type":"home-care"}
                row 7: handover.care-package.sourced.v1 brokerage_2026-11-24.csv/LCC-PKG-5522|SOURCED|25/11/2026#4ab8190034b4/care-package.sourced
                  subject=9434765927 time=2026-11-25T00:00:00Z
                  data={"agreed_start":"2026-11-28","local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-120044"},"package_id":"LCC-PKG-5522","provider":"Bramley Home Care Ltd, Leeds"}
                row 8: handover.care-package.started.v1 brokerage_2026-11-24.csv/LCC-PKG-5521|STARTED|27/11/2026#1bac99d64d4f/care-package.started
                  subject=9434765919 time=2026-11-27T00:00:00Z
                  data={"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"package_id":"LCC-PKG-5521","started_on":"2026-11-27"}
            "#]],
        );
    }

    #[test]
    fn referrals_export_csv() {
        check(
            "referrals-assessments.toml",
            "referrals_2026-11-24.csv",
            FileFormat::Csv,
            expect![[r#"
                row 2: handover.referral.accepted.v1 referrals_2026-11-24.csv/RR8-REF-77120|ACCEPTED|#09b94e83aa2b/referral.accepted
                  subject=9434765919 time=2026-11-22T10:05:00Z
                  data={"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"referral_id":"RR8-REF-77120","team":"Hospital Social Work Team (LGI)"}
                row 3: handover.referral.declined.v1 referrals_2026-11-24.csv/RR8-REF-77133|DECLINED|#9e7ff741d171/referral.declined
                  subject=9434765927 time=2026-11-22T11:40:00Z
                  data={"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-120044"},"reason":"Needs met by existing package","referral_id":"RR8-REF-77133"}
                row 4: handover.referral.assessment-completed.v1 referrals_2026-11-24.csv/RR8-REF-77120|ASSESSED|S9#a69ae7a94e83/referral.assessment-completed
                  subject=9434765919 time=2026-11-23T16:20:00Z
                  data={"assessment_type":"needs","local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"outcome":"eligible","referral_id":"RR8-REF-77120"}
                row 5: handover.referral.assessment-completed.v1 referrals_2026-11-24.csv/RR8-REF-77120|ASSESSED|CARER#7d434c407a0c/referral.assessment-completed
                  subject=9434765919 time=2026-11-23T00:00:00Z
                  data={"assessment_type":"carer","local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-118203"},"outcome":"no-assessment-needed","referral_id":"RR8-REF-77120"}
                row 6: skipped
                row 7: handover.referral.withdrawn.v1 referrals_2026-11-24.csv/RR8-REF-77141|WITHDRAWN|#ef601059d6e8/referral.withdrawn
                  subject=- time=2026-11-24T08:30:00Z
                  data={"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-120977"},"reason":"Patient died in hospital","referral_id":"RR8-REF-77141"}
            "#]],
        );
    }

    #[test]
    fn referrals_export_json_matches_csv() {
        let m = mapping("referrals-assessments.toml");
        let (csv_events, _) = translate_all(&m, "referrals_2026-11-24.csv", FileFormat::Csv);
        let (json_events, _) = translate_all(&m, "referrals_2026-11-24.json", FileFormat::Json);
        let data = |v: &[Event]| {
            v.iter()
                .map(|e| (e.data.clone(), e.time, e.subject))
                .collect::<Vec<_>>()
        };
        assert_eq!(data(&csv_events), data(&json_events));
        assert_eq!(csv_events.len(), 5);
    }

    #[test]
    fn bad_rows() {
        check(
            "brokerage-homecare.toml",
            "brokerage_bad_rows.csv",
            FileFormat::Csv,
            expect![[r#"
                row 2: rejected [NHS Number] no NHS number and no local id: the row names nobody
                row 3: rejected [NHS Number] not a valid NHS number: the NHS number's check digit is wrong (Modulus 11)
                row 4: rejected [Service Type] unknown code "RESPITE": expected one of CB, DOM, EQ, HC, NURS, OTH, REAB, RES
                row 5: rejected [Hours Per Week] "ten" is not a number
                row 5: rejected [Required Start] "31/11/2026" is not a date in the format %d/%m/%Y
                row 6: rejected [Status] unknown value "SUSPENDED": expected one of CANCELLED, DRAFT, ENDED, ON HOLD, REQUESTED, RESTARTED, SOURCED, STARTED
                row 7: rejected [Provider] "provider" is a required property
                row 8: handover.care-package.requested.v1 brokerage_bad_rows.csv/LCC-PKG-6007|REQUESTED|24/11/2026#99cb842cd33c/care-package.requested
                  subject=9434765978 time=2026-11-24T00:00:00Z
                  data={"local_id":{"system":"urn:gss:E08000035:mosaic","value":"M-130005"},"package_id":"LCC-PKG-6007","required_start":"2026-12-03","service_type":"equipment"}
                row 9: unreadable: has 3 fields, the header has 15
            "#]],
        );
    }

    fn source_in(dir: &Path, mapping_file: &str) -> FileSource {
        FileSource {
            name: "leeds-brokerage".into(),
            dir: dir.to_owned(),
            source: BROKERAGE.into(),
            format: FileFormat::Csv,
            mapping: root().join("deploy/mappings").join(mapping_file),
        }
    }

    #[tokio::test]
    async fn rejects_file_lists_every_bad_row_and_good_rows_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let src = source_in(dir.path(), "brokerage-homecare.toml");
        let path = dir.path().join("brokerage_bad_rows.csv");
        std::fs::write(&path, fixture("brokerage_bad_rows.csv")).unwrap();
        let sink = RecordingSink::new();
        let metrics = FileDropMetrics::default();
        let m = mapping("brokerage-homecare.toml");
        let summary = process_file(&src, &m, &path, &sink, 2, &metrics)
            .await
            .unwrap();
        assert_eq!(
            summary,
            FileSummary {
                rows: 8,
                accepted: 1,
                rejected: 7,
                skipped: 0,
                duplicates: 0
            }
        );
        assert_eq!(sink.events().len(), 1);
        assert!(dir.path().join("done/brokerage_bad_rows.csv").exists());
        assert!(!path.exists());
        let errors = std::fs::read_to_string(
            dir.path()
                .join("rejected/brokerage_bad_rows.csv.errors.csv"),
        )
        .unwrap();
        expect![[r#"
            row,column,reason,original_row
            2,NHS Number,no NHS number and no local id: the row names nobody,"LCC-PKG-6001,REQUESTED,24/11/2026,,,HC,10,2,1,27/11/2026,,,,,"
            3,NHS Number,not a valid NHS number: the NHS number's check digit is wrong (Modulus 11),"LCC-PKG-6002,REQUESTED,24/11/2026,9434765918,M-130001,HC,10,2,1,27/11/2026,,,,,"
            4,Service Type,"unknown code ""RESPITE"": expected one of CB, DOM, EQ, HC, NURS, OTH, REAB, RES","LCC-PKG-6003,REQUESTED,24/11/2026,9434765935,M-130002,RESPITE,10,2,1,27/11/2026,,,,,"
            5,Hours Per Week,"""ten"" is not a number","LCC-PKG-6004,REQUESTED,2026-11-24,9434765943,M-130003,HC,ten,2,1,31/11/2026,,,,,"
            5,Required Start,"""31/11/2026"" is not a date in the format %d/%m/%Y","LCC-PKG-6004,REQUESTED,2026-11-24,9434765943,M-130003,HC,ten,2,1,31/11/2026,,,,,"
            6,Status,"unknown value ""SUSPENDED"": expected one of CANCELLED, DRAFT, ENDED, ON HOLD, REQUESTED, RESTARTED, SOURCED, STARTED","LCC-PKG-6005,SUSPENDED,24/11/2026,9434765951,M-130004,HC,,,,,,,,,"
            7,Provider,"""provider"" is a required property","LCC-PKG-6006,SOURCED,25/11/2026,9434765978,M-130005,HC,,,,,,28/11/2026,,,"
            9,,"has 3 fields, the header has 15","LCC-PKG-6008,REQUESTED,24/11/2026"
        "#]].assert_eq(&errors);
    }

    /// Each row of a CSV text (read as bytes, so the Windows-1252 fallback applies) through
    /// the brokerage mapping: `row n: <event data JSON>` or `row n: <column>: <reason>`.
    fn rows_of(csv: &[u8]) -> Vec<String> {
        let m = mapping("brokerage-homecare.toml");
        read_rows(FileFormat::Csv, csv)
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Err(u) => format!("row {}: unreadable: {}", u.number, u.reason),
                Ok(row) => match translate_row(&m, "urn:gss:E08000035:brokerage", "f.csv", &row) {
                    Ok(ev) => format!(
                        "row {}: {} {}",
                        row.number,
                        ev[0].time,
                        serde_json::to_string(&ev[0].data.to_json()).unwrap()
                    ),
                    Err(errs) => format!(
                        "row {}: {}",
                        row.number,
                        errs.iter()
                            .map(|e| format!("{}: {}", e.column, e.reason))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                },
            })
            .collect()
    }

    const HEADER: &str = "Package ID,Status,Status Date,NHS Number,Person ID,Service Type,Hours Per Week,Calls Per Day,Carers Per Call,Required Start,Provider,Agreed Start,Start Date,Referral ID,Reason";

    #[test]
    fn spreadsheet_exports_read_as_a_council_engineer_expects() {
        let text = [
            HEADER,
            // two-digit year: refused, not the year 26
            "P1,REQUESTED,24/11/26,943 476 5919,,HC,10,2,1,,,,,,",
            ",,,,,,,,,,,,,,",
            "   ",
            // Excel's text marker on the NHS number; a trailing delimiter the header lacks
            "P2,REQUESTED,24/11/2026,'9434765919,,HC,10,2,1,01/12/2026,,,,,,",
            "P3,ENDED,24/11/2026,=\"9434765919\",,,,,,,,,,,O~Neill^moved",
        ]
        .join("\r\n");
        // Windows-1252 bytes for the curly apostrophe (0x92) and the en dash (0x96).
        let bytes: Vec<u8> = text
            .bytes()
            .map(|b| match b {
                b'~' => 0x92,
                b'^' => 0x96,
                b => b,
            })
            .collect();
        expect![[r#"
            [
                "row 2: Status Date: \"24/11/26\" is not a date in the format %d/%m/%Y",
                "row 5: 2026-11-24T00:00:00Z {\"calls_per_day\":2,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P2\",\"required_start\":\"2026-12-01\",\"service_type\":\"home-care\"}",
                "row 6: 2026-11-24T00:00:00Z {\"package_id\":\"P3\",\"reason\":\"O’Neill–moved\"}",
            ]
        "#]].assert_debug_eq(&rows_of(&bytes));
    }

    #[test]
    fn a_stray_windows_1252_byte_leaves_the_rest_of_a_utf_8_file_as_written() {
        // UTF-8 throughout (Zoë's ë, an en dash) but for one curly apostrophe pasted in as
        // Windows-1252 (0x92): before, the whole file was read as Windows-1252.
        let mut bytes = [
            HEADER,
            "P4,ENDED,24/11/2026,9434765919,,,,,,,,,,,Zoë – moved to O~Neill Court",
        ]
        .join("\n")
        .into_bytes();
        let at = bytes.iter().position(|&b| b == b'~').unwrap();
        bytes[at] = 0x92;
        expect![[r#"
            [
                "row 2: 2026-11-24T00:00:00Z {\"package_id\":\"P4\",\"reason\":\"Zoë – moved to O’Neill Court\"}",
            ]
        "#]]
        .assert_debug_eq(&rows_of(&bytes));
    }

    #[test]
    fn nested_json_values_matter_only_under_keys_the_mapping_reads() {
        let m = mapping("referrals-assessments.toml");
        let json = br#"[
            {"Referral Ref": "R1", "Event": "ACCEPTED", "Event Date": "22/11/2026 10:05", "NHS No": "9434765919", "Team": "HSWT", "audit": {"by": "x"}, "tags": ["a"]},
            {"Referral Ref": "R2", "Event": "ACCEPTED", "Event Date": "22/11/2026 10:05", "NHS No": "9434765919", "Team": {"name": "HSWT"}}
        ]"#;
        let rows = read_rows(FileFormat::Json, json).unwrap();
        let results: Vec<_> = rows
            .iter()
            .map(|r| {
                translate_row(
                    &m,
                    "urn:gss:E08000035:mosaic",
                    "f.json",
                    r.as_ref().unwrap(),
                )
            })
            .collect();
        assert_eq!(results[0].as_ref().unwrap().len(), 1);
        let errs = results[1].as_ref().unwrap_err();
        assert_eq!(errs[0].column, "Team");
        assert!(errs[0].reason.contains("nested"), "{errs:?}");
    }

    #[test]
    fn binary_and_utf16_files_are_not_read_as_rows() {
        let xlsx = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00";
        let e = read_rows(FileFormat::Csv, xlsx).unwrap_err();
        assert!(e.0.contains("binary"), "{e}");
        let utf16: Vec<u8> = b"\xFF\xFE"
            .iter()
            .copied()
            .chain(
                "Package ID,Status\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes),
            )
            .collect();
        let e = read_rows(FileFormat::Csv, &utf16).unwrap_err();
        assert!(e.0.contains("UTF-16"), "{e}");
    }

    #[test]
    fn dates_times_and_whole_numbers_are_read_as_other_exports_write_them() {
        let text = [
            HEADER,
            // ISO dates, and Excel's date-times at midnight in date columns
            "P1,REQUESTED,2026-11-24,9434765919,,HC,10,2,1,20/11/2026 00:00,,,,,",
            "P2,REQUESTED,24/11/2026,9434765919,,HC,10,2,1,2026-11-21 00:00:00,,,,,",
            // the time of day, with or without seconds, in a date-only time column; ISO
            // without an offset is UK local time (BST in June)
            "P3,REQUESTED,24/11/2026 10:05:30,9434765919,,HC,10,2,1,,,,,,",
            "P4,REQUESTED,2026-06-22T10:05:00,9434765919,,HC,10,2,1,,,,,,",
            // pandas' whole numbers; a fraction is still no whole number
            "P5,REQUESTED,24/11/2026,9434765919,,HC,10,3.0,1,,,,,,",
            "P6,REQUESTED,24/11/2026,9434765919,,HC,10,2.5,1,,,,,,",
            // a time that is not midnight does not make a date
            "P7,REQUESTED,24/11/2026,9434765919,,HC,10,2,1,20/11/2026 09:00,,,,,",
        ]
        .join("\n");
        expect![[r#"
            [
                "row 2: 2026-11-24T00:00:00Z {\"calls_per_day\":2,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P1\",\"required_start\":\"2026-11-20\",\"service_type\":\"home-care\"}",
                "row 3: 2026-11-24T00:00:00Z {\"calls_per_day\":2,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P2\",\"required_start\":\"2026-11-21\",\"service_type\":\"home-care\"}",
                "row 4: 2026-11-24T10:05:30Z {\"calls_per_day\":2,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P3\",\"service_type\":\"home-care\"}",
                "row 5: 2026-06-22T10:05:00+01:00 {\"calls_per_day\":2,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P4\",\"service_type\":\"home-care\"}",
                "row 6: 2026-11-24T00:00:00Z {\"calls_per_day\":3,\"carers_per_call\":1,\"hours_per_week\":10.0,\"package_id\":\"P5\",\"service_type\":\"home-care\"}",
                "row 7: Calls Per Day: \"2.5\" is not a whole number",
                "row 8: Required Start: \"20/11/2026 09:00\" is not a date in the format %d/%m/%Y",
            ]
        "#]].assert_debug_eq(&rows_of(text.as_bytes()));
    }

    #[test]
    fn json_lines_are_read_one_row_a_line() {
        let text = "{\"a\": \"1\"}\n\n{\"a\": 2}\n{\"a\": \n[{\"a\": 3}]\n";
        let rows = read_rows(FileFormat::Json, text.as_bytes()).unwrap();
        let shown: Vec<String> = rows
            .iter()
            .map(|r| match r {
                Ok(row) => format!("{} {:?}", row.number, row.cells),
                Err(u) => format!("{} unreadable {:?}: {}", u.number, u.original, u.reason),
            })
            .collect();
        expect![[r#"
            [
                "1 [(\"a\", \"1\")]",
                "3 [(\"a\", \"2\")]",
                "4 unreadable \"{\\\"a\\\": \": not valid JSON: EOF while parsing a value at line 1 column 6",
                "5 unreadable \"[{\\\"a\\\":3}]\": is not a JSON object",
            ]
        "#]].assert_debug_eq(&shown);
        // A file that is neither an array nor lines of objects is refused whole.
        let e = read_rows(FileFormat::Json, b"{\"a\": 1").unwrap_err();
        assert!(e.0.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn a_corrected_row_under_the_same_key_is_a_new_event_and_a_repeat_is_not() {
        let m = mapping("brokerage-homecare.toml");
        let ids = |csv: String| -> Vec<String> {
            read_rows(FileFormat::Csv, csv.as_bytes())
                .unwrap()
                .into_iter()
                .map(|r| {
                    translate_row(&m, "urn:gss:E08000035:brokerage", "f.csv", &r.unwrap()).unwrap()
                        [0]
                    .id
                    .clone()
                })
                .collect()
        };
        let row = "P1,REQUESTED,24/11/2026,9434765919,,HC,10,2,1,,,,,,";
        let corrected = "P1,REQUESTED,24/11/2026,9434765919,,HC,21,4,1,,,,,,";
        let first = ids(format!("{HEADER}\n{row}\n{row}\n{corrected}\n"));
        assert_eq!(first[0], first[1]);
        assert_ne!(first[0], first[2]);
        // Quoting and line endings do not change a row's id.
        let quoted =
            format!("{HEADER}\r\n\"P1\",REQUESTED,24/11/2026,9434765919,,HC,10,2,1,,,,,,\r\n");
        assert_eq!(ids(quoted)[0], first[0]);
    }

    #[test]
    fn times_with_an_offset_keep_it() {
        let m: Mapping = toml::from_str(
            r#"
            [event]
            type = "care-package.started"
            [time]
            column = "At"
            format = "%Y-%m-%dT%H:%M:%S%z"
            [person]
            nhs_number = "NHS"
            [fields]
            package_id = { column = "Package" }
            started_on = { column = "Start", kind = "date", format = "%Y-%m-%d" }
            "#,
        )
        .unwrap();
        let time = |at: &str| {
            let csv = format!("Package,At,NHS,Start\nP1,{at},9434765919,2026-06-22\n");
            let row = read_rows(FileFormat::Csv, csv.as_bytes())
                .unwrap()
                .remove(0)
                .unwrap();
            translate_row(&m, "urn:gss:E08000035:b", "f.csv", &row)
                .map(|e| e[0].time.to_rfc3339())
                .unwrap_or_else(|e| e[0].reason.clone())
        };
        assert_eq!(time("2026-06-22T10:05:00+0000"), "2026-06-22T10:05:00Z");
        assert_eq!(
            time("2026-11-22T10:05:00-0500"),
            "2026-11-22T10:05:00-05:00"
        );
        // RFC 3339 with its own offset is read too, whatever the format.
        assert_eq!(time("2026-06-22T10:05:00.5Z"), "2026-06-22T10:05:00.500Z");
    }

    /// Dates a file's modification past the grace period for unfinished files.
    fn set_old(path: &Path) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - UNFINISHED_GRACE - Duration::from_secs(1))
            .unwrap();
    }

    /// Drops `text` as `name` into a brokerage source (written long enough ago to be
    /// finished), expects the whole file in
    /// `rejected/` with nothing published, and returns its errors file.
    async fn rejected_whole(name: &str, text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let src = source_in(dir.path(), "brokerage-homecare.toml");
        let m = mapping("brokerage-homecare.toml");
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        // Written before the grace period for unfinished files: a finished export.
        set_old(&path);
        let sink = RecordingSink::new();
        let metrics = FileDropMetrics::default();
        process_file(&src, &m, &path, &sink, 10, &metrics)
            .await
            .unwrap();
        assert!(dir.path().join("rejected").join(name).exists());
        assert_eq!(sink.events().len(), 0);
        std::fs::read_to_string(dir.path().join(format!("rejected/{name}.errors.csv"))).unwrap()
    }

    #[tokio::test]
    async fn a_file_without_a_mapped_column_is_rejected_whole() {
        let header = HEADER.replace("NHS Number", "NHS No.");
        let errors = rejected_whole(
            "renamed.csv",
            &format!("{header}\nP1,REQUESTED,24/11/2026,9434765919,M-1,HC,10,2,1,,,,,,\n"),
        )
        .await;
        // (CSV doubles the quotes around the column's name.)
        assert!(errors.contains("no column \"\"NHS Number\"\""), "{errors}");
    }

    #[tokio::test]
    async fn a_quote_never_closed_rejects_the_file_rather_than_swallow_its_rows() {
        let errors = rejected_whole(
            "unclosed.csv",
            &format!(
                "{HEADER}\nP1,REQUESTED,24/11/2026,9434765919,M-1,HC,10,2,1,,,,,,\n\
                 P2,REQUESTED,24/11/2026,9434765919,\"M-2,HC,10,2,1,,,,,,\n\
                 P3,REQUESTED,24/11/2026,9434765919,M-3,HC,10,2,1,,,,,,\n"
            ),
        )
        .await;
        assert!(
            errors.contains("quoted field in the row on line 3 is never closed"),
            "{errors}"
        );
        // Quoted fields that close, over several lines or with doubled quotes, and a quote
        // inside an unquoted field, are ordinary.
        for ok in [
            "a,b\n1,\"two\nlines\"\n",
            "a,b\n1,\"say \"\"hi\"\"\"\n",
            "a,b\n1,5\" tall\n2,x\n",
        ] {
            assert!(!ends_inside_quotes(ok.as_bytes()), "{ok}");
            assert!(read_rows(FileFormat::Csv, ok.as_bytes()).is_ok(), "{ok}");
        }
        assert!(ends_inside_quotes(b"1,\"open\n2,x\n"));
    }

    #[tokio::test]
    async fn a_json_export_whose_nhs_number_key_was_renamed_is_rejected_whole() {
        let fixture = std::fs::read_to_string(format!(
            "{}/../../tests/fixtures/filedrop/referrals_2026-11-24.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let drop = |name: &str, text: String| {
            let name = name.to_owned();
            async move {
                let dir = tempfile::tempdir().unwrap();
                let mut src = source_in(dir.path(), "referrals-assessments.toml");
                src.format = FileFormat::Json;
                let m = mapping("referrals-assessments.toml");
                let path = dir.path().join(&name);
                std::fs::write(&path, text).unwrap();
                set_old(&path);
                let sink = RecordingSink::new();
                let summary = process_file(&src, &m, &path, &sink, 10, &FileDropMetrics::default())
                    .await
                    .unwrap();
                let errors =
                    std::fs::read_to_string(dir.path().join(format!("rejected/{name}.errors.csv")))
                        .unwrap_or_default();
                (summary, sink.events().len(), errors)
            }
        };
        let (summary, published, errors) = drop(
            "renamed.json",
            fixture.replace("\"NHS No\"", "\"nhs_number\""),
        )
        .await;
        assert_eq!((summary.rows, published), (0, 0));
        assert!(
            errors.contains("no record has the key \"\"NHS No\"\"")
                && errors.contains("records have \"\"nhs_number\"\""),
            "{errors}"
        );
        // Keys left out because their value is null are not a renamed key: an export whose
        // records have no NHS number at all is read under the local ids.
        let without: Vec<Value> = serde_json::from_str::<Vec<Value>>(&fixture)
            .unwrap()
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("NHS No");
                r
            })
            .collect();
        let (summary, published, errors) =
            drop("no-nhs.json", serde_json::to_string(&without).unwrap()).await;
        assert!(summary.rows > 0 && published > 0, "{errors}");
        assert_eq!(summary.rejected, 0, "{errors}");
        for (key, says) in [
            ("NHS No.", true),
            ("nhs_number", true),
            ("NHSNumber", true),
            ("client_nhs_no", true),
            ("NHS", true),
            ("NHS Trust", false),
            ("nhs_trust_code", false),
        ] {
            assert_eq!(names_an_nhs_number(key), says, "{key}");
        }
        // As given, the fixture is read as ever.
        let (summary, published, _) = drop("ok.json", fixture.clone()).await;
        assert!(summary.accepted > 0 && published > 0);
    }

    #[tokio::test]
    async fn a_file_naming_a_mapped_column_twice_is_rejected_whole() {
        let errors = rejected_whole(
            "twice.csv",
            &format!("{HEADER},reason\nP1,CANCELLED,24/11/2026,9434765919,M-1,HC,,,,,,,,,Moved away,Died\n"),
        )
        .await;
        assert!(
            errors.contains("names column \"\"Reason\"\" more than once"),
            "{errors}"
        );
    }

    #[tokio::test]
    async fn a_header_without_mapped_columns_is_rejected_even_when_no_row_matches_it() {
        // A European-locale "CSV": semicolons, and a decimal comma that splits one row into
        // two fields; no row has the header's one field, yet the header alone says what is
        // wrong (before, the file went to done/ with row errors only).
        let errors = rejected_whole(
            "semicolons.csv",
            &format!(
                "{}\nP1;REQUESTED;24/11/2026;9434765919;M-1;HC;10,5;2;1;;;;;;\n",
                HEADER.replace(',', ";")
            ),
        )
        .await;
        assert!(errors.contains("no column \"\"NHS Number\"\""), "{errors}");
        assert!(
            errors.contains("export the file comma-separated"),
            "{errors}"
        );
        // Each missing column is named once, though the mapping reads some twice.
        let named = |c: &str| errors.matches(&format!("\"\"{c}\"\"")).count();
        let m = mapping("brokerage-homecare.toml");
        assert!(m.key_columns().iter().all(|c| named(c) == 1), "{errors}");
    }

    /// Publishes to a [`RecordingSink`]; on its first call, appends `more` to `path`, as a
    /// writer that paused past `settle_ms` between rows does.
    struct WriterResumes {
        inner: RecordingSink,
        path: PathBuf,
        more: Vec<u8>,
        done: std::sync::atomic::AtomicBool,
    }

    impl EventSink for WriterResumes {
        fn publish<'a>(
            &'a self,
            events: &'a [Event],
        ) -> handover_events::sink::BoxFuture<'a, Result<Vec<handover_events::Stored>, SinkError>>
        {
            if !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
                use std::io::Write;
                let mut f = std::fs::File::options()
                    .append(true)
                    .open(&self.path)
                    .unwrap();
                f.write_all(&self.more).unwrap();
                // A modification time that differs whatever the file system's resolution.
                f.set_modified(SystemTime::now() + Duration::from_secs(5))
                    .unwrap();
            }
            self.inner.publish(events)
        }
    }

    #[tokio::test]
    async fn a_file_still_being_written_is_not_moved_with_rows_unread() {
        let dir = tempfile::tempdir().unwrap();
        let src = source_in(dir.path(), "brokerage-homecare.toml");
        let m = mapping("brokerage-homecare.toml");
        let metrics = FileDropMetrics::default();
        let all = String::from_utf8(fixture("brokerage_2026-11-24.csv")).unwrap();
        let lines: Vec<&str> = all.lines().collect();
        let path = dir.path().join("slow.csv");

        // Created, then the query runs: empty, or only the header, or stopped after a line
        // break inside a quoted field, it is waited for.
        for text in [
            "".to_owned(),
            format!("{}\r\n", lines[0]),
            format!(
                "{}\r\nP1,REQUESTED,24/11/2026,9434765919,\"Flat 2\n",
                lines[0]
            ),
        ] {
            std::fs::write(&path, &text).unwrap();
            let sink = RecordingSink::new();
            let r = process_file(&src, &m, &path, &sink, 10, &metrics).await;
            assert!(matches!(r, Err(FileError::Unsettled(_))), "{text:?}: {r:?}");
            assert!(path.exists());
        }

        // The writer pauses after two rows and resumes while they are being published: the
        // file stays to be read again, and then every row is read.
        std::fs::write(&path, format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2])).unwrap();
        set_old(&path);
        let rest: String = lines[3..].iter().map(|l| format!("{l}\n")).collect();
        let sink = WriterResumes {
            inner: RecordingSink::new(),
            path: path.clone(),
            more: rest.into_bytes(),
            done: false.into(),
        };
        let r = process_file(&src, &m, &path, &sink, 10, &metrics).await;
        assert!(matches!(r, Err(FileError::Unsettled(_))), "{r:?}");
        assert!(path.exists(), "not moved to done/ with rows unread");
        set_old(&path);
        let summary = process_file(&src, &m, &path, &sink, 10, &metrics)
            .await
            .unwrap();
        assert_eq!(summary.rows as usize, lines.len() - 1);
        assert!(dir.path().join("done/slow.csv").exists());
        // An export of nothing, left alone past the grace period, is read as one.
        let empty = dir.path().join("nothing.csv");
        std::fs::write(&empty, format!("{}\n", lines[0])).unwrap();
        set_old(&empty);
        let summary = process_file(&src, &m, &empty, &RecordingSink::new(), 10, &metrics)
            .await
            .unwrap();
        assert_eq!(summary.rows, 0);
        assert!(dir.path().join("done/nothing.csv").exists());
    }

    #[tokio::test]
    async fn an_unreadable_file_moves_to_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = source_in(dir.path(), "referrals-assessments.toml");
        src.format = FileFormat::Json;
        let path = dir.path().join("broken.json");
        std::fs::write(&path, b"[{\"Referral Ref\": ").unwrap();
        let metrics = FileDropMetrics::default();
        let m = mapping("referrals-assessments.toml");
        // Freshly written, it stops mid-row: it may still be being written, and waits.
        let sink = RecordingSink::new();
        let r = process_file(&src, &m, &path, &sink, 10, &metrics).await;
        assert!(matches!(r, Err(FileError::Unsettled(_))), "{r:?}");
        assert!(path.exists());
        // Once it has not changed for the grace period, it is read as it is.
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - UNFINISHED_GRACE - Duration::from_secs(1))
            .unwrap();
        process_file(&src, &m, &path, &sink, 10, &metrics)
            .await
            .unwrap();
        assert!(dir.path().join("rejected/broken.json").exists());
        let errors =
            std::fs::read_to_string(dir.path().join("rejected/broken.json.errors.csv")).unwrap();
        assert!(
            errors.starts_with("row,column,reason,original_row\n0,,not valid JSON"),
            "{errors}"
        );
        assert_eq!(metrics.snapshot()["leeds-brokerage"].files_rejected, 1);
    }

    #[tokio::test]
    async fn a_failure_mid_file_then_a_retry_and_a_redrop_store_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let src = source_in(dir.path(), "brokerage-homecare.toml");
        let m = mapping("brokerage-homecare.toml");
        let metrics = FileDropMetrics::default();
        let name = "brokerage_2026-11-24.csv";
        let path = dir.path().join(name);
        std::fs::write(&path, fixture(name)).unwrap();
        let sink = RecordingSink::new();
        // The log goes away after 3 events, in the second chunk of 2.
        sink.fail_after(Some(3));
        assert!(process_file(&src, &m, &path, &sink, 2, &metrics)
            .await
            .is_err());
        assert!(path.exists(), "the file stays until every row is durable");
        assert_eq!(sink.events().len(), 3);
        sink.fail_after(None);
        let s = process_file(&src, &m, &path, &sink, 2, &metrics)
            .await
            .unwrap();
        assert_eq!((s.accepted, s.skipped, s.duplicates), (6, 1, 3));
        assert_eq!(sink.events().len(), 6, "each event once");
        assert!(dir.path().join("done").join(name).exists());
        // Dropped again: everything is a duplicate; the copy is kept under another name.
        std::fs::write(&path, fixture(name)).unwrap();
        let s = process_file(&src, &m, &path, &sink, 2, &metrics)
            .await
            .unwrap();
        assert_eq!(s.duplicates, 6);
        assert_eq!(sink.events().len(), 6);
        assert!(dir.path().join("done/brokerage_2026-11-24.1.csv").exists());
        let c = &metrics.snapshot()["leeds-brokerage"];
        assert_eq!((c.files_done, c.publish_failures, c.duplicates), (2, 1, 9));
        let text = metrics.render_prometheus();
        assert!(
            text.contains(
                "handover_filedrop_rows_total{source=\"leeds-brokerage\",result=\"accepted\"} 12"
            ),
            "{text}"
        );
        assert!(!text.contains("9434765919"));
    }

    #[tokio::test]
    async fn a_file_is_done_only_after_the_sink_acknowledges() {
        assert_acks_after_durability(|sink| async move {
            let dir = tempfile::tempdir().unwrap();
            let src = source_in(dir.path(), "brokerage-homecare.toml");
            let path = dir.path().join("brokerage_2026-11-24.csv");
            std::fs::write(&path, fixture("brokerage_2026-11-24.csv")).unwrap();
            let m = mapping("brokerage-homecare.toml");
            let r = process_file(
                &src,
                &m,
                &path,
                sink.as_ref(),
                100,
                &FileDropMetrics::default(),
            )
            .await;
            let done = dir.path().join("done/brokerage_2026-11-24.csv").exists();
            assert_eq!(
                r.is_ok(),
                done,
                "moved to done/ exactly when processing succeeded"
            );
            assert_eq!(path.exists(), !done);
            r.is_ok()
        })
        .await;
    }

    #[tokio::test]
    async fn run_skips_unsettled_and_temporary_files_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Arc::new(FileDropConfig {
            poll_interval_ms: 10,
            settle_ms: 60_000,
            chunk_rows: 100,
            sources: vec![source_in(dir.path(), "brokerage-homecare.toml")],
        });
        std::fs::write(
            dir.path().join("fresh.csv"),
            fixture("brokerage_2026-11-24.csv"),
        )
        .unwrap();
        std::fs::write(dir.path().join("partial.csv.tmp"), b"Package ID,Sta").unwrap();
        assert!(ready_files(&cfg.sources[0], Duration::from_millis(60_000))
            .unwrap()
            .is_empty());
        let sink = Arc::new(RecordingSink::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            cfg,
            sink.clone(),
            Arc::new(FileDropMetrics::default()),
            async move {
                let _ = rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            sink.calls(),
            0,
            "a file modified within settle_ms is not read"
        );
        tx.send(()).unwrap();
        task.await.unwrap().unwrap();
        assert!(dir.path().join("fresh.csv").exists());
        // Settled files are picked up; temporary ones never.
        let ready = ready_files(&source_in(dir.path(), "x"), Duration::ZERO).unwrap();
        assert_eq!(ready, vec![dir.path().join("fresh.csv")]);
    }

    #[tokio::test]
    async fn run_refuses_a_bad_mapping_naming_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[event]\ntype = \"care-package.requested\"\n[time]\ncolumn = \"D\"\n[person]\nnhs_number = \"N\"\n[fields]\nprovider = { column = \"P\" }\n").unwrap();
        let mut src = source_in(dir.path(), "x");
        src.mapping = bad;
        let cfg = Arc::new(FileDropConfig {
            sources: vec![src],
            ..FileDropConfig::default()
        });
        let err = run(
            cfg,
            Arc::new(RecordingSink::new()),
            Arc::default(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        expect![[r#"file drop source "leeds-brokerage": mapping <dir>/bad.toml: fields.provider: none of the mapping's event types (handover.care-package.requested.v1) has this field"#]].assert_eq(&err.to_string().replace(&dir.path().display().to_string(), "<dir>"));
        let _ = FailMode::Refused;
    }

    #[test]
    fn config_example_parses_and_unknown_keys_are_named() {
        let doc: String = include_str!("filedrop.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! [filedrop]"))
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        #[derive(Deserialize)]
        struct Doc {
            filedrop: FileDropConfig,
        }
        let d: Doc = toml::from_str(&doc).unwrap();
        assert_eq!(d.filedrop.sources[0].format, FileFormat::Csv);
        assert_eq!(d.filedrop.chunk_rows, 200);
        let e = toml::from_str::<FileDropConfig>("[[sources]]\nname = \"a\"\ndir = \"d\"\nsource = \"s\"\nformat = \"csv\"\nmapping = \"m\"\nmaping = \"typo\"\n").unwrap_err();
        assert!(e.to_string().contains("maping"), "{e}");
        assert_eq!(FileDropConfig::default().sources, vec![]);
        let e = Mapping::from_toml("[event]\ncolumn = \"S\"\nvalues = { A = \"care-package.teleported\" }\n[time]\ncolumn = \"D\"\n[person]\nnhs_number = \"N\"\n", Path::new("m.toml")).unwrap_err();
        expect![[r#"mapping m.toml: [event] "care-package.teleported" is not an event type of the catalogue (e.g. care-package.requested) or skip"#]].assert_eq(&e.to_string());
    }
}
