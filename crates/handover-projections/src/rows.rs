//! Index rows derived from a journey for the worklists and measures, and the derived
//! "waiting for". Pure functions of a [`Journey`] (and, for what depends on it, today).
//!
//! The journey projection writes these rows in the same atomic batch as the journey, so
//! they are always consistent with it and share its stream position:
//! - a [`DelayRow`] per person whose current stay is in hospital with a discharge ready
//!   date (filtered by "past the DRD" at query time, because that depends on today);
//! - a [`BrokerageRow`] per care package requested and not yet started;
//! - one [`PersonFacts`] per person for the flow and outcome measures.

use chrono::NaiveDate;
use handover_events::catalogue::{Attribution, DelayReason, Destination, ServiceType};
use handover_events::{Date, Timestamp};
use serde::{Deserialize, Serialize};

use crate::journey::{Journey, Package, PackageStatus, Referral, ReferralStatus, Stay, StayStatus};

/// Who the row is about, as the worklists show them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PersonSummary {
    /// NHS number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// "Family, Given".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Date of birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
    /// A local id, for a person with no NHS number: a row must name whom it is about to
    /// whoever reads it (a discharge team finds the patient by it) and to the access audit.
    /// Rows stored before it was added have none until the person's next event or a
    /// rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<handover_events::LocalId>,
}

/// A row of the discharge-delays worklist (before today's filter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DelayRow {
    /// The person.
    pub person: PersonSummary,
    /// Encounter id.
    pub encounter_id: String,
    /// The trust (ODS code) that reported the stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    /// ODS site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Ward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Responsible council (from the stay, else the latest referral).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub council: Option<String>,
    /// Admission time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Timestamp>,
    /// Discharge ready date.
    pub discharge_ready_date: Date,
    /// Pathway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pathway: Option<u8>,
    /// Latest delay reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_reason: Option<DelayReason>,
    /// Latest delay attribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributed_to: Option<Attribution>,
    /// Latest referral's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral_status: Option<ReferralStatus>,
    /// Latest care package's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub care_package_status: Option<PackageStatus>,
    /// What the person is waiting for, derived from their events.
    pub waiting_for: String,
}

/// The fields of a stored [`DelayRow`] the worklist filters and sorts by, read without
/// decoding the rest of the row (the worklist decodes in full only the page it returns).
#[derive(Debug, Deserialize)]
pub struct DelayRowKey<'a> {
    /// See [`DelayRow::encounter_id`].
    #[serde(borrow)]
    pub encounter_id: std::borrow::Cow<'a, str>,
    /// See [`DelayRow::trust`].
    #[serde(default, borrow)]
    pub trust: Option<std::borrow::Cow<'a, str>>,
    /// See [`DelayRow::site`].
    #[serde(default, borrow)]
    pub site: Option<std::borrow::Cow<'a, str>>,
    /// See [`DelayRow::council`].
    #[serde(default, borrow)]
    pub council: Option<std::borrow::Cow<'a, str>>,
    /// See [`DelayRow::discharge_ready_date`].
    pub discharge_ready_date: Date,
    /// See [`DelayRow::pathway`].
    #[serde(default)]
    pub pathway: Option<u8>,
}

/// The fields of a stored [`BrokerageRow`] the queue filters and sorts by, read without
/// decoding the rest of the row.
#[derive(Debug, Deserialize)]
pub struct BrokerageRowKey<'a> {
    /// See [`BrokerageRow::package_id`].
    #[serde(borrow)]
    pub package_id: std::borrow::Cow<'a, str>,
    /// See [`BrokerageRow::service_type`].
    #[serde(default)]
    pub service_type: Option<ServiceType>,
    /// See [`BrokerageRow::council`].
    #[serde(default, borrow)]
    pub council: Option<std::borrow::Cow<'a, str>>,
    /// See [`BrokerageRow::required_start`].
    #[serde(default)]
    pub required_start: Option<Date>,
    /// See [`BrokerageRow::hospital`].
    #[serde(default, borrow)]
    pub hospital: Option<HospitalKey<'a>>,
}

/// The fields of [`HospitalStatus`] in a [`BrokerageRowKey`].
#[derive(Debug, Deserialize)]
pub struct HospitalKey<'a> {
    /// See [`HospitalStatus::trust`].
    #[serde(default, borrow)]
    pub trust: Option<std::borrow::Cow<'a, str>>,
    /// See [`HospitalStatus::discharge_ready_date`].
    #[serde(default)]
    pub discharge_ready_date: Option<Date>,
}

/// A row of the brokerage queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BrokerageRow {
    /// The person.
    pub person: PersonSummary,
    /// Package id.
    pub package_id: String,
    /// Status (requested or sourced).
    pub status: PackageStatus,
    /// Service type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Council arranging it (the referral's council, else the stay's responsible council).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub council: Option<String>,
    /// Required start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_start: Option<Date>,
    /// Agreed start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreed_start: Option<Date>,
    /// Provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Hours per week.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_per_week: Option<f64>,
    /// Calls per day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_day: Option<u8>,
    /// Carers per call (2 is double-handed care, much of what a broker sources on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carers_per_call: Option<u8>,
    /// When requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
    /// The referral it follows from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// That referral's status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral_status: Option<ReferralStatus>,
    /// The person's current hospital stay, if in hospital.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hospital: Option<HospitalStatus>,
}

/// Where a person on the brokerage queue is in hospital.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HospitalStatus {
    /// The trust (ODS code) that reported the stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<String>,
    /// Site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Ward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Discharge ready date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharge_ready_date: Option<Date>,
}

/// What the measures need of one stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StayFact {
    /// Site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Responsible council.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub council: Option<String>,
    /// Admission date (Europe/London).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted: Option<NaiveDate>,
    /// Discharge ready date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<NaiveDate>,
    /// Discharge date (Europe/London).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharged: Option<NaiveDate>,
    /// Pathway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pathway: Option<u8>,
    /// Destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// Latest delay attribution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributed_to: Option<Attribution>,
    /// Admitted as a transfer from another provider (`admission_method` `transfer`): the
    /// same episode of care continuing elsewhere, not a readmission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
}

/// What the measures need of one care package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PackageFact {
    /// Service type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Start date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_on: Option<NaiveDate>,
}

/// One person's facts for the measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct PersonFacts {
    /// Birth date, when known (the 91-day outcome's age bands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<NaiveDate>,
    /// Stays (not cancelled), in admission order.
    pub stays: Vec<StayFact>,
    /// Care packages that started.
    pub packages: Vec<PackageFact>,
}

fn summary(j: &Journey) -> PersonSummary {
    let id = &j.identity;
    let name = match (&id.family_name, &id.given_name) {
        (Some(f), Some(g)) => Some(format!("{}, {g}", f.to_uppercase())),
        (Some(f), None) => Some(f.to_uppercase()),
        (None, Some(g)) => Some(g.clone()),
        (None, None) => None,
    };
    PersonSummary {
        nhs_number: j.nhs_number.clone(),
        name,
        birth_date: id.birth_date,
        local_id: if j.nhs_number.is_none() {
            id.local_ids.first().cloned()
        } else {
            None
        },
    }
}

/// The trust that reported a stay: the ODS code of its source.
pub fn trust_of(stay: &Stay) -> Option<String> {
    match crate::journey::source_org(&stay.source) {
        (org, "nhs") => Some(org),
        _ => None,
    }
}

/// The referrals relevant to a stay: those for its encounter, else those without one.
/// When a visit number was used again, a referral belongs to the episode admitted last
/// before it was sent.
fn referrals_for<'a>(j: &'a Journey, stay: &Stay) -> Vec<&'a Referral> {
    let names_stay = |r: &Referral| r.encounter_id.as_deref() == Some(stay.encounter_id.as_str());
    if !j.referrals.iter().any(names_stay) {
        // The common case, and the only cheap one for a person with thousands of stays:
        // no referral names this encounter, so there are no episodes to tell apart.
        return j
            .referrals
            .iter()
            .filter(|r| r.encounter_id.is_none())
            .collect();
    }
    let episodes: Vec<&Stay> = j
        .stays
        .iter()
        .filter(|s| s.encounter_id == stay.encounter_id)
        .collect();
    let episode_of = |r: &Referral| -> Option<&Stay> {
        let sent = r.sent_at?;
        episodes
            .iter()
            .copied()
            .filter(|s| s.admitted_at.is_some_and(|a| a <= sent))
            .max_by_key(|s| s.admitted_at)
    };
    let own: Vec<&Referral> = j
        .referrals
        .iter()
        .filter(|r| names_stay(r))
        .filter(|r| episodes.len() < 2 || episode_of(r).is_none_or(|e| std::ptr::eq(e, stay)))
        .collect();
    if !own.is_empty() {
        return own;
    }
    j.referrals
        .iter()
        .filter(|r| r.encounter_id.is_none())
        .collect()
}

fn packages_for<'a>(j: &'a Journey, referrals: &[&Referral]) -> Vec<&'a Package> {
    j.care_packages
        .iter()
        .filter(|p| match &p.referral_id {
            Some(r) => referrals.iter().any(|x| &x.referral_id == r),
            None => true,
        })
        .collect()
}

fn latest<'a, T>(items: &[&'a T], key: impl Fn(&T) -> Option<Timestamp>) -> Option<&'a T> {
    items.iter().copied().max_by_key(|t| key(t))
}

/// What a person in hospital past their DRD is waiting for, from their events.
pub fn waiting_for(j: &Journey, stay: &Stay) -> String {
    let refs = referrals_for(j, stay);
    let live: Vec<&Referral> = refs
        .iter()
        .copied()
        .filter(|r| matches!(r.status, ReferralStatus::Sent | ReferralStatus::Accepted))
        .collect();
    let suspended = j
        .care_packages
        .iter()
        .any(|p| p.status == PackageStatus::Suspended);
    if refs.is_empty() && suspended {
        // Readmitted with care already in place: it restarts when they go home.
        return "package to resume".into();
    }
    let needs_care = stay.pathway.map(|p| p > 0).unwrap_or(false) || !refs.is_empty();
    if needs_care {
        let Some(referral) = latest(&live, |r| r.sent_at.or(r.responded_at)) else {
            return if refs.is_empty() {
                "referral not yet sent".into()
            } else {
                "new referral (previous declined or withdrawn)".into()
            };
        };
        if referral.status == ReferralStatus::Sent {
            return "referral not yet accepted".into();
        }
        let packages = packages_for(j, &[referral]);
        let open: Vec<&Package> = packages
            .iter()
            .copied()
            .filter(|p| !matches!(p.status, PackageStatus::Cancelled | PackageStatus::Ended))
            .collect();
        if referral.assessments.is_empty() && open.is_empty() {
            return "assessment".into();
        }
        let Some(package) = latest(&open, |p| p.requested_at) else {
            return "care package request".into();
        };
        return match package.status {
            PackageStatus::Requested => match package.service_type {
                Some(ServiceType::Residential | ServiceType::Nursing) => "care home bed".into(),
                Some(ServiceType::CommunityBed) => "community bed".into(),
                _ => "provider not yet sourced".into(),
            },
            PackageStatus::Sourced => "package start date".into(),
            PackageStatus::Suspended => "package to resume".into(),
            _ => "discharge (care is in place)".into(),
        };
    }
    match &stay.latest_delay {
        Some(d) => waiting_for_delay(d.reason),
        None => "nothing recorded".into(),
    }
}

/// A row's `waiting_for` when the latest delay's reason says it (`awaiting care package`).
pub fn waiting_for_delay(reason: DelayReason) -> String {
    reason.as_str().replace('-', " ")
}

/// The delay row for the person's current stay, when in hospital with a DRD.
pub fn delay_row(j: &Journey) -> Option<DelayRow> {
    delay_row_for(j, j.current_stay()?)
}

/// The person's delay rows: one for each stay in hospital with a DRD, the current stay's
/// first. A person in hospital at two trusts (a transfer whose discharge has not come, or
/// an admission elsewhere) stays on the first trust's worklist while the second has them
/// too. A stay named only by a ready date or delay counts only when it is the current one
/// (see [`Journey::current_stay`]).
pub fn delay_rows(j: &Journey) -> Vec<DelayRow> {
    let current = j.current_stay();
    let mut rows: Vec<DelayRow> = current
        .and_then(|s| delay_row_for(j, s))
        .into_iter()
        .collect();
    for s in j.open_stays() {
        if current.is_some_and(|c| std::ptr::eq(c, s)) {
            continue;
        }
        rows.extend(delay_row_for(j, s));
    }
    rows
}

/// The delay rows stored for a person (empty bytes: none; a JSON array; or, as journey
/// layouts before 10 stored it, one row).
pub fn parse_delay_rows<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> serde_json::Result<Vec<T>> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(Vec::new()),
        Some(b'[') => serde_json::from_slice(bytes),
        Some(_) => serde_json::from_slice(bytes).map(|r| vec![r]),
    }
}

/// The council a stay's delay is shown to and counted against: the one the trust named as
/// responsible, else the one its latest referral went to (after a decline and a referral
/// elsewhere, the second council), the same on the worklist and in the measures.
fn council_of(stay: &Stay, latest_referral: Option<&Referral>) -> Option<String> {
    stay.responsible_council
        .clone()
        .or_else(|| latest_referral.and_then(|r| r.to_council.clone()))
}

/// The referral made last from `stay` (by when it was sent, else answered).
fn latest_referral<'a>(j: &'a Journey, stay: &Stay) -> Option<&'a Referral> {
    latest(&referrals_for(j, stay), |r| r.sent_at.or(r.responded_at))
}

/// The delay row for `stay`, when in hospital with a DRD.
fn delay_row_for(j: &Journey, stay: &Stay) -> Option<DelayRow> {
    if stay.status != StayStatus::InHospital {
        return None;
    }
    let drd = stay.discharge_ready_date?;
    let referral = latest_referral(j, stay);
    let packages = match referral {
        Some(r) => packages_for(j, &[r]),
        None => j.care_packages.iter().collect(),
    };
    let package = latest(&packages, |p| p.requested_at);
    Some(DelayRow {
        person: summary(j),
        encounter_id: stay.encounter_id.clone(),
        trust: trust_of(stay),
        site: stay.site.clone(),
        ward: stay.ward.clone(),
        council: council_of(stay, referral),
        admitted_at: stay.admitted_at,
        discharge_ready_date: drd,
        pathway: stay.pathway,
        delay_reason: stay.latest_delay.as_ref().map(|d| d.reason),
        attributed_to: stay.latest_delay.as_ref().map(|d| d.attributed_to),
        referral_status: referral.map(|r| r.status),
        care_package_status: package.map(|p| p.status),
        waiting_for: waiting_for(j, stay),
    })
}

/// The brokerage rows: packages requested or sourced, not yet started.
pub fn brokerage_rows(j: &Journey) -> Vec<BrokerageRow> {
    let current = j.current_stay();
    let in_hospital = current.filter(|s| s.status == StayStatus::InHospital);
    j.care_packages
        .iter()
        .filter(|p| matches!(p.status, PackageStatus::Requested | PackageStatus::Sourced))
        .map(|p| {
            let referral = p
                .referral_id
                .as_ref()
                .and_then(|id| j.referrals.iter().find(|r| &r.referral_id == id));
            // The stay the package's referral was made from, while in hospital; else the
            // current stay (a person in hospital twice is shown at the referring trust).
            let in_hospital = referral
                .and_then(|r| r.encounter_id.as_deref())
                .and_then(|enc| {
                    j.open_stays()
                        .filter(|s| s.encounter_id == enc)
                        .max_by_key(|s| s.admitted_at)
                })
                .or(in_hospital);
            BrokerageRow {
                person: summary(j),
                package_id: p.package_id.clone(),
                status: p.status,
                service_type: p.service_type,
                // The council the referral went to; else the council whose own system
                // asked for the package (it is brokering it); else the stay's council.
                council: referral
                    .and_then(|r| r.to_council.clone())
                    .or_else(|| p.requested_by.clone())
                    .or_else(|| current.and_then(|s| s.responsible_council.clone())),
                required_start: p.required_start,
                agreed_start: p.agreed_start,
                provider: p.provider.clone(),
                hours_per_week: p.hours_per_week,
                calls_per_day: p.calls_per_day,
                carers_per_call: p.carers_per_call,
                requested_at: p.requested_at,
                referral_id: p.referral_id.clone(),
                referral_status: referral.map(|r| r.status),
                hospital: in_hospital.map(|s| HospitalStatus {
                    trust: trust_of(s),
                    site: s.site.clone(),
                    ward: s.ward.clone(),
                    discharge_ready_date: s.discharge_ready_date,
                }),
            }
        })
        .collect()
}

/// The person's facts for the measures.
pub fn person_facts(j: &Journey) -> PersonFacts {
    // A stay named only by a ready date or delay counts only when it is the current one,
    // as on the worklist: an encounter id the trust's own events never used would
    // otherwise add delayed bed-days for no one's bed.
    let mut stays: Vec<StayFact> = j
        .counted_stays()
        .filter(|s| s.status != StayStatus::Cancelled)
        .map(|s| StayFact {
            site: s.site.clone(),
            council: council_of(s, latest_referral(j, s)),
            admitted: s.admitted_at.map(|t| t.london_date()),
            ready: s.discharge_ready_date.map(|d| d.0),
            discharged: s.discharged_at.map(|t| t.london_date()),
            pathway: s.pathway,
            destination: s.destination,
            attributed_to: s.latest_delay.as_ref().map(|d| d.attributed_to),
            transfer: s.admission_method
                == Some(handover_events::catalogue::AdmissionMethod::Transfer),
        })
        .collect();
    stays.sort_by_key(|s| s.admitted);
    PersonFacts {
        birth_date: j.identity.birth_date.map(|d| d.0),
        stays,
        packages: j
            .care_packages
            .iter()
            .filter(|p| p.started_on.is_some())
            .map(|p| PackageFact {
                service_type: p.service_type,
                started_on: p.started_on.map(|d| d.0),
            })
            .collect(),
    }
}
