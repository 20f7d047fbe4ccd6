//! The journey as the API shows it: the stored read model plus what depends on today
//! (days delayed) and each timeline entry's organisation and sector.

use chrono::NaiveDate;
use serde::Serialize;

use crate::journey::{source_org, Identity, Journey, Package, Referral, Stay};

/// A journey as served by `GET /v1/persons/{nhs_number}/journey`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct JourneyView<'a> {
    /// The NHS number.
    pub nhs_number: Option<&'a str>,
    /// Identifiers and demographics.
    pub identity: &'a Identity,
    /// The current (or most recent) stay with its delay.
    pub current_stay: Option<StayView<'a>>,
    /// Every stay.
    pub stays: Vec<StayView<'a>>,
    /// Referrals.
    pub referrals: &'a [Referral],
    /// Care packages.
    pub care_packages: &'a [Package],
    /// The merged timeline, oldest first.
    pub timeline: Vec<TimelineView<'a>>,
    /// The date "today" was taken as for derived delays (Europe/London).
    pub as_of: NaiveDate,
}

/// A stay with derived delay.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct StayView<'a> {
    /// The stay.
    #[serde(flatten)]
    pub stay: &'a Stay,
    /// Days from the discharge ready date to discharge (or today); None without a DRD.
    pub days_delayed: Option<i64>,
}

/// A timeline entry with its organisation.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct TimelineView<'a> {
    /// Event time.
    pub time: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// Event source.
    pub source: &'a str,
    /// Organisation code (ODS or GSS).
    pub organisation: String,
    /// `nhs`, `council` or `other`.
    pub sector: &'static str,
    /// Event id.
    pub id: &'a str,
    /// Event data.
    pub data: &'a serde_json::Value,
}

impl Journey {
    /// The view of this journey as of `today`.
    pub fn view(&self, today: NaiveDate) -> JourneyView<'_> {
        fn stay_view(stay: &Stay, today: NaiveDate) -> StayView<'_> {
            StayView {
                stay,
                days_delayed: Journey::days_delayed(stay, today),
            }
        }
        JourneyView {
            nhs_number: self.nhs_number.as_deref(),
            identity: &self.identity,
            current_stay: self.current_stay().map(|s| stay_view(s, today)),
            stays: self.stays.iter().map(|s| stay_view(s, today)).collect(),
            referrals: &self.referrals,
            care_packages: &self.care_packages,
            timeline: self
                .timeline
                .iter()
                .map(|e| {
                    let (organisation, sector) = source_org(&e.source);
                    TimelineView {
                        time: e.time.to_rfc3339(),
                        event_type: &e.event_type,
                        source: &e.source,
                        organisation,
                        sector,
                        id: &e.id,
                        data: &e.data,
                    }
                })
                .collect(),
            as_of: today,
        }
    }
}
