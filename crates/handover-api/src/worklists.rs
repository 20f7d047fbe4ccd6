//! The worklists and measures: `GET /v1/worklists/discharge-delays`,
//! `GET /v1/worklists/brokerage` and `GET /v1/measures/flow`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::NaiveDate;
use handover_projections::measures::{flow, FlowMeasures, MeasureFilter};
use handover_projections::rows::{BrokerageRow, BrokerageRowKey, DelayRow, DelayRowKey};
use handover_projections::Journeys;
use serde::Serialize;

use crate::{ApiError, AppState, Caller};

/// A delay row with what depends on today.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DelayItem {
    /// Days since the discharge ready date.
    pub days_delayed: i64,
    /// The row.
    #[serde(flatten)]
    pub row: DelayRow,
    /// The local id of a person with no NHS number, for the access audit: kept even when
    /// the caller may not see local record numbers (and so not shown).
    #[serde(skip)]
    pub audit_local_id: Option<handover_events::LocalId>,
}

/// The discharge-delays worklist.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DelayWorklist {
    /// The date taken as today (Europe/London).
    pub as_of: NaiveDate,
    /// Rows matching the filters, on every page.
    pub total: usize,
    /// Rows skipped before this page (the `offset` asked for).
    pub offset: usize,
    /// The page size asked for (`limit`, default 100).
    pub limit: usize,
    /// This page, longest delay first.
    pub rows: Vec<DelayItem>,
}

/// A brokerage row with what depends on today.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BrokerageItem {
    /// Days since the package was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_waiting: Option<i64>,
    /// In hospital past their discharge ready date.
    pub delayed_in_hospital: bool,
    /// Days since the DRD, when in hospital with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_delayed: Option<i64>,
    /// The row.
    #[serde(flatten)]
    pub row: BrokerageRow,
    /// As [`DelayItem::audit_local_id`].
    #[serde(skip)]
    pub audit_local_id: Option<handover_events::LocalId>,
}

/// The brokerage queue.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BrokerageQueue {
    /// The date taken as today (Europe/London).
    pub as_of: NaiveDate,
    /// Rows matching the filters, on every page.
    pub total: usize,
    /// Rows skipped before this page (the `offset` asked for).
    pub offset: usize,
    /// The page size asked for (`limit`, default 100).
    pub limit: usize,
    /// This page: people delayed in hospital first, then by required start.
    pub rows: Vec<BrokerageItem>,
}

/// Reads people's data: discharge teams, brokers, social workers, admins.
pub(crate) async fn require_people_reader(
    st: &AppState,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let caller = st.auth.authenticate(headers).await?;
    if !caller.role.reads_people() {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str().into(),
            action: "read people's records",
        });
    }
    Ok(caller)
}

fn param_date(q: &HashMap<String, String>, name: &str) -> Result<Option<NaiveDate>, ApiError> {
    match q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => {
            let bad = || {
                ApiError::BadRequest(format!(
                    "query parameter {name} must be a date YYYY-MM-DD between {} and {}, not {s:?}",
                    FIRST_DATE, LAST_DATE
                ))
            };
            // Exactly YYYY-MM-DD: chrono alone would also take `+2026-11-01` or `2026-11-1`.
            let shaped = s.len() == 10
                && s.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                });
            let date = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .filter(|d| shaped && (FIRST_DATE..=LAST_DATE).contains(d))
                .ok_or_else(bad)?;
            Ok(Some(date))
        }
    }
}

/// The earliest date a query parameter may give (the measures' period is counted day by day).
const FIRST_DATE: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("a date");
/// The latest date a query parameter may give.
const LAST_DATE: NaiveDate = NaiveDate::from_ymd_opt(2199, 12, 31).expect("a date");

fn param<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// A worklist page's size when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// `offset` (default 0) and `limit` (1 to 5,000, default [`DEFAULT_PAGE`]).
fn param_page(q: &HashMap<String, String>) -> Result<(usize, usize), ApiError> {
    let limit = match param(q, "limit") {
        None => DEFAULT_PAGE,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=5000).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "limit must be a whole number from 1 to 5000, not {s:?}"
                ))
            })?,
    };
    let offset = match param(q, "offset") {
        None => 0,
        Some(s) => s.parse::<usize>().map_err(|_| {
            ApiError::BadRequest(format!("offset must be a whole number from 0, not {s:?}"))
        })?,
    };
    Ok((offset, limit))
}

/// Builds the delays worklist from stored rows.
pub fn delay_worklist(
    st: &AppState,
    caller: &Caller,
    q: &HashMap<String, String>,
    today: NaiveDate,
) -> Result<DelayWorklist, ApiError> {
    let pathway = match param(q, "pathway") {
        None => None,
        Some(p) => Some(p.parse::<u8>().ok().filter(|p| *p <= 3).ok_or_else(|| {
            ApiError::BadRequest(format!("pathway must be 0, 1, 2 or 3, not {p:?}"))
        })?),
    };
    let (site, council, (offset, limit)) = (param(q, "site"), param(q, "council"), param_page(q)?);
    // The caller's organisation's rows, stored in worklist order: count them and decode
    // only the page returned.
    let filtered = site.is_some() || council.is_some() || pathway.is_some();
    let keep = |r: &DelayRowKey<'_>| {
        site.is_none_or(|s| r.site.as_deref() == Some(s))
            && council.is_none_or(|c| r.council.as_deref() == Some(c))
            && pathway.is_none_or(|p| r.pathway == Some(p))
    };
    let page = Journeys::delay_page(
        &st.journey_tree,
        &caller.organisation,
        today,
        filtered.then_some(&keep as &dyn Fn(&DelayRowKey<'_>) -> bool),
        (offset, limit),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let total = page.total;
    let items: Vec<DelayItem> = page
        .rows
        .into_iter()
        .filter(|r| crate::policy::may_see_delay_row(caller, r))
        .map(|mut row| {
            let audit_local_id = row.person.local_id.clone();
            crate::policy::minimise_delay_row(caller, &mut row);
            DelayItem {
                audit_local_id,
                days_delayed: handover_events::time::days_delayed(
                    row.discharge_ready_date.0,
                    None,
                    today,
                ),
                row,
            }
        })
        .collect();
    Ok(DelayWorklist {
        as_of: today,
        total,
        offset,
        limit,
        rows: items,
    })
}

/// Builds the brokerage queue from stored rows.
pub fn brokerage_queue(
    st: &AppState,
    caller: &Caller,
    q: &HashMap<String, String>,
    today: NaiveDate,
) -> Result<BrokerageQueue, ApiError> {
    let (council, service, (offset, limit)) = (
        param(q, "council"),
        param(q, "service_type"),
        param_page(q)?,
    );
    if let Some(s) = service {
        if !handover_events::catalogue::ServiceType::CODES.contains(&s) {
            return Err(ApiError::BadRequest(format!(
                "service_type must be one of {}, not {s:?}",
                handover_events::catalogue::ServiceType::CODES.join(", ")
            )));
        }
    }
    // The caller's organisation's rows, indexed in queue order: read only the page returned
    // (and, when filtered, the filter's fields of each row).
    let filtered = council.is_some() || service.is_some();
    let keep = |r: &BrokerageRowKey<'_>| {
        council.is_none_or(|c| r.council.as_deref() == Some(c))
            && service.is_none_or(|s| r.service_type.map(|t| t.as_str()) == Some(s))
    };
    let page = Journeys::brokerage_page(
        &st.journey_tree,
        &caller.organisation,
        today,
        filtered.then_some(&keep as &dyn Fn(&BrokerageRowKey<'_>) -> bool),
        (offset, limit),
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let total = page.total;
    let items: Vec<BrokerageItem> = page
        .rows
        .into_iter()
        .filter(|r| crate::policy::may_see_brokerage_row(caller, r))
        .map(|mut row| {
            let audit_local_id = row.person.local_id.clone();
            crate::policy::minimise_brokerage_row(caller, &mut row);
            let drd = row.hospital.as_ref().and_then(|h| h.discharge_ready_date);
            let days_delayed = drd.map(|d| handover_events::time::days_delayed(d.0, None, today));
            BrokerageItem {
                audit_local_id,
                days_waiting: row
                    .requested_at
                    .map(|t| (today - t.london_date()).num_days().max(0)),
                delayed_in_hospital: drd.is_some_and(|d| d.0 < today),
                days_delayed,
                row,
            }
        })
        .collect();
    Ok(BrokerageQueue {
        as_of: today,
        total,
        offset,
        limit,
        rows: items,
    })
}

/// Computes the flow measures.
pub fn flow_measures(
    st: &AppState,
    q: &HashMap<String, String>,
    today: NaiveDate,
) -> Result<FlowMeasures, ApiError> {
    let filter = MeasureFilter {
        from: param_date(q, "from")?,
        to: param_date(q, "to")?,
        site: param(q, "site").map(Into::into),
        council: param(q, "council").map(Into::into),
    };
    // Checked as the measures will take the period.
    let (f, t) = filter.period(today);
    if f > t {
        return Err(ApiError::BadRequest(match (filter.from, filter.to) {
            (Some(_), Some(_)) => "from must not be after to".into(),
            _ => format!("from must not be after to (to is {t} when not given)"),
        }));
    }
    if (t - f).num_days() > 3660 {
        return Err(ApiError::BadRequest(
            "the period may be at most ten years".into(),
        ));
    }
    let facts = Journeys::facts(&st.journey_tree).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(flow(facts, &filter, today))
}

/// The reason for a worklist read: the header when given (it must be one of the lawful
/// reasons, as for a journey: what is audited is what was stated), else direct care (the
/// purpose of the worklists).
fn worklist_reason(headers: &HeaderMap) -> Result<&'static str, ApiError> {
    if !headers.contains_key("handover-access-reason") {
        return Ok("direct-care");
    }
    crate::access_reason(headers).ok_or(ApiError::ReasonRequired)
}

/// A worklist page as its JSON answer, given back once the access audit of everyone on it
/// is durably stored (the answer is rendered while the records are acknowledged).
async fn audited_worklist<T: Serialize>(
    st: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    from: crate::policy::ClientAddr,
    action: &str,
    page: &T,
    people: Vec<crate::policy::Person<'_>>,
) -> Result<Response, ApiError> {
    let capacity = 512 + 640 * people.len();
    crate::policy::audited(
        st,
        caller,
        worklist_reason(headers)?,
        action,
        from,
        people,
        || crate::no_store_json(page, capacity),
    )
    .await
}

pub(crate) async fn get_delays(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: crate::policy::ClientAddr,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = require_people_reader(&st, &headers).await?;
    worklist_reason(&headers)?;
    let w = delay_worklist(&st, &caller, &q, handover_events::time::london_today())?;
    let people = w
        .rows
        .iter()
        .map(|r| crate::policy::Person::of(&r.row.person, r.audit_local_id.as_ref()));
    audited_worklist(
        &st,
        &caller,
        &headers,
        from,
        "worklist:discharge-delays",
        &w,
        people.collect(),
    )
    .await
}

pub(crate) async fn get_brokerage(
    State(st): State<AppState>,
    headers: HeaderMap,
    from: crate::policy::ClientAddr,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = require_people_reader(&st, &headers).await?;
    worklist_reason(&headers)?;
    let w = brokerage_queue(&st, &caller, &q, handover_events::time::london_today())?;
    let people = w
        .rows
        .iter()
        .map(|r| crate::policy::Person::of(&r.row.person, r.audit_local_id.as_ref()));
    audited_worklist(
        &st,
        &caller,
        &headers,
        from,
        "worklist:brokerage",
        &w,
        people.collect(),
    )
    .await
}

pub(crate) async fn get_flow(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = st.auth.authenticate(&headers).await?;
    if caller.role == crate::Role::Integration {
        return Err(ApiError::Forbidden {
            role: caller.role.as_str().into(),
            action: "read care measures",
        });
    }
    Ok(Json(flow_measures(
        &st,
        &q,
        handover_events::time::london_today(),
    )?)
    .into_response())
}
