//! The journey read model: one person's shared picture across hospital and council.
//!
//! A [`Journey`] keeps the person's events (the timeline, ordered by event time then stream
//! sequence, without duplicates by `source`+`id`) and the state folded from them. Because
//! the state is a fold over the time-ordered timeline, the order in which events *arrive*
//! does not matter: an event that arrives late is slotted into place and the state is
//! refolded. Applying an event twice changes nothing.
//!
//! One exception, on purpose: between an admission or discharge and its cancellation, the
//! one recorded later in the log wins, whatever their event times ([`StayMarks`]). A
//! correction is recorded after what it corrects, but a sender's clocks do not always say
//! so.
//!
//! Stays are keyed by the reporting trust and the encounter id. An admission after the
//! stay's discharge (a reused visit number) starts a new episode of it. A discharge carries
//! the stay's admission time, site and ward, which fill in a stay admitted before Handover
//! saw its admission.

use chrono::NaiveDate;
use handover_events::catalogue::*;
use handover_events::time::days_delayed;
use handover_events::{Date, Event, EventData, EventType, Timestamp};
use serde::{Deserialize, Serialize};

/// One person's journey as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Journey {
    /// The NHS number, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nhs_number: Option<String>,
    /// What identity events said.
    #[serde(default)]
    pub identity: Identity,
    /// Hospital stays, in order of admission.
    #[serde(default)]
    pub stays: Vec<Stay>,
    /// Referrals to social care.
    #[serde(default)]
    pub referrals: Vec<Referral>,
    /// Care packages.
    #[serde(default)]
    pub care_packages: Vec<Package>,
    /// Every event about the person, in event-time order.
    #[serde(default)]
    pub timeline: Vec<Entry>,
    /// The fold's bookkeeping for each stay, by the stay's index in `stays` (not shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) stay_marks: Vec<StayMarks>,
}

/// What the fold remembers of a stay beyond what it shows.
///
/// The timeline is folded in event-time order, but between an action and its
/// cancellation the one *recorded* later (the higher stream sequence) wins,
/// whatever their event times say. A FHIR Encounter put back to `in-progress`
/// after `entered-in-error` carries its original `period.start`, which sorts
/// before the cancellation; an HL7 A13 whose EVN clock runs behind the A03's
/// sorts before the discharge it cancels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StayMarks {
    /// Sequence of the admission or admission cancellation recorded last.
    #[serde(default, skip_serializing_if = "is_zero")]
    admission: u64,
    /// Sequence of the discharge or discharge cancellation recorded last.
    #[serde(default, skip_serializing_if = "is_zero")]
    discharge: u64,
    /// The current ward came from a transfer (an admission keyed in later does not
    /// move the patient back to the admission ward).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    transferred: bool,
    /// The pathway last assigned by `pathway-assigned`, which a discharge naming another
    /// pathway overrides and its cancellation puts back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assigned_pathway: Option<u8>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Identifiers and demographics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Identity {
    /// NHS number verification status (UK Core code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nhs_number_status: Option<String>,
    /// Local identifiers known for the person.
    pub local_ids: Vec<LocalId>,
    /// Given name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Date of birth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
    /// Postcode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    /// Registered GP practice (ODS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gp_practice: Option<String>,
    /// NHS numbers merged into this one.
    pub previous_nhs_numbers: Vec<String>,
}

/// Where a stay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StayStatus {
    /// In hospital.
    InHospital,
    /// Discharged.
    Discharged,
    /// The admission was cancelled (entered in error).
    Cancelled,
}

/// A recorded delay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Delay {
    /// Reason code.
    pub reason: DelayReason,
    /// Attribution.
    pub attributed_to: Attribution,
    /// Free-text note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When it was recorded.
    pub recorded_at: Timestamp,
}

/// One hospital stay (encounter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Stay {
    /// Encounter id.
    pub encounter_id: String,
    /// Status.
    pub status: StayStatus,
    /// The organisation that reported it (from the event source).
    pub source: String,
    /// ODS site code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Current ward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Admission time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Timestamp>,
    /// Admission method.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_method: Option<AdmissionMethod>,
    /// Council responsible for the person's social care.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responsible_council: Option<String>,
    /// Discharge ready date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharge_ready_date: Option<Date>,
    /// D2A pathway.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pathway: Option<u8>,
    /// Expected discharge date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_discharge_date: Option<Date>,
    /// The most recent delay recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_delay: Option<Delay>,
    /// Discharge time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharged_at: Option<Timestamp>,
    /// Discharge method (1–5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discharge_method: Option<u8>,
    /// Discharge destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
}

/// Referral status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReferralStatus {
    /// Sent, not yet answered.
    Sent,
    /// Accepted by the council.
    Accepted,
    /// Declined by the council.
    Declined,
    /// Withdrawn by the referrer.
    Withdrawn,
}

/// A completed assessment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Assessment {
    /// Kind.
    pub assessment_type: AssessmentType,
    /// Outcome.
    pub outcome: AssessmentOutcome,
    /// When it was completed.
    pub completed_at: Timestamp,
}

/// A referral to social care.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Referral {
    /// Referral id.
    pub referral_id: String,
    /// Status.
    pub status: ReferralStatus,
    /// Council referred to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_council: Option<String>,
    /// Referring organisation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_org: Option<String>,
    /// Encounter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    /// Reason for referral.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Urgency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
    /// Proposed discharge date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_discharge_date: Option<Date>,
    /// Consent obtained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_obtained: Option<bool>,
    /// Safeguarding concern.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safeguarding_concern: Option<bool>,
    /// Carer involved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carer_involved: Option<bool>,
    /// When sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
    /// When accepted, declined or withdrawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub responded_at: Option<Timestamp>,
    /// Council team.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Why it was declined or withdrawn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
    /// Assessments completed.
    pub assessments: Vec<Assessment>,
}

/// Care package status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PackageStatus {
    /// Requested from brokerage.
    Requested,
    /// A provider is agreed.
    Sourced,
    /// Care has started.
    Started,
    /// Suspended (e.g. during a hospital stay).
    Suspended,
    /// Ended.
    Ended,
    /// Cancelled before or after starting.
    Cancelled,
}

/// A care package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Package {
    /// Package id.
    pub package_id: String,
    /// Status.
    pub status: PackageStatus,
    /// Service type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_type: Option<ServiceType>,
    /// Referral it follows from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// Hours per week.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours_per_week: Option<f64>,
    /// Calls per day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_day: Option<u8>,
    /// Carers per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carers_per_call: Option<u8>,
    /// The weekly schedule (from a v2 request; v1 requests have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Required start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_start: Option<Date>,
    /// Provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Agreed start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agreed_start: Option<Date>,
    /// Actual start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_on: Option<Date>,
    /// When requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
    /// Reason given with the latest suspension, end or cancellation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// The council (GSS code) whose system requested it, when a council's did: the
    /// brokerage worklist's council for a package that follows no referral or stay
    /// (a community or self referral).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// One timeline entry: an event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Entry {
    /// Stream sequence.
    pub seq: u64,
    /// Event time.
    pub time: Timestamp,
    /// Event id.
    pub id: String,
    /// Event source.
    pub source: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event data (normalised).
    pub data: serde_json::Value,
}

impl Journey {
    /// A new journey for a person.
    pub fn new(nhs_number: Option<String>) -> Journey {
        Journey {
            nhs_number,
            ..Journey::default()
        }
    }

    /// Applies an event stored at `seq`. Returns false when it was already applied.
    pub fn apply(&mut self, seq: u64, event: &Event) -> bool {
        if self.nhs_number.is_none() {
            self.nhs_number = event.subject.map(|n| n.as_string());
        }
        if self
            .timeline
            .iter()
            .any(|e| e.id == event.id && e.source == event.source)
        {
            return false;
        }
        let entry = Entry {
            seq,
            time: event.time,
            id: event.id.clone(),
            source: event.source.clone(),
            event_type: event.event_type().as_str().to_string(),
            data: event.data.to_json(),
        };
        let pos = self
            .timeline
            .partition_point(|e| (e.time, e.seq) <= (entry.time, entry.seq));
        let at_end = pos == self.timeline.len();
        self.timeline.insert(pos, entry);
        if at_end {
            self.fold(&event.data, &event.time, seq, &event.source);
        } else {
            self.refold();
        }
        true
    }

    /// Absorbs another journey of the same person (a link or an NHS number merge).
    pub fn merge(&mut self, other: Journey) {
        for e in other.timeline {
            if !self
                .timeline
                .iter()
                .any(|x| x.id == e.id && x.source == e.source)
            {
                self.timeline.push(e);
            }
        }
        self.timeline.sort_by_key(|e| (e.time, e.seq));
        self.refold();
    }

    /// Recomputes the state from the timeline.
    pub fn refold(&mut self) {
        let timeline = std::mem::take(&mut self.timeline);
        let nhs = self.nhs_number.take();
        *self = Journey::new(nhs);
        for e in &timeline {
            if let Some(t) = EventType::parse(&e.event_type) {
                if let Ok(data) = t.decode_data(e.data.clone()) {
                    self.fold(&data, &e.time, e.seq, &e.source);
                }
            }
        }
        self.timeline = timeline;
    }

    /// The index of the stay `encounter_id` names, created when new.
    ///
    /// Encounter ids are the reporting trust's: the same id from two trusts is two
    /// stays. An event from a council (or another non-NHS source) names a stay by id
    /// alone, and finds the latest one with that id.
    fn stay_index(&mut self, encounter_id: &str, source: &str) -> usize {
        if self.stay_marks.len() < self.stays.len() {
            // A journey stored before the marks existed is refolded on start; this only
            // keeps the two lists the same length whatever is read.
            self.stay_marks
                .resize(self.stays.len(), StayMarks::default());
        }
        let (org, sector) = source_org(source);
        let found = self.stays.iter().rposition(|s| {
            s.encounter_id == encounter_id && {
                let (stay_org, stay_sector) = source_org(&s.source);
                sector != "nhs" || stay_sector != "nhs" || stay_org == org
            }
        });
        match found {
            Some(i) => {
                if sector == "nhs" && source_org(&self.stays[i].source).1 != "nhs" {
                    // First named by a council; the trust's own events now say whose it is.
                    self.stays[i].source = source.to_string();
                }
                i
            }
            None => self.push_stay(encounter_id, source),
        }
    }

    /// A new stay (or a new episode of one), with its bookkeeping; its index.
    fn push_stay(&mut self, encounter_id: &str, source: &str) -> usize {
        self.stays.push(Stay {
            encounter_id: encounter_id.to_string(),
            status: StayStatus::InHospital,
            source: source.to_string(),
            site: None,
            ward: None,
            admitted_at: None,
            admission_method: None,
            responsible_council: None,
            discharge_ready_date: None,
            pathway: None,
            expected_discharge_date: None,
            latest_delay: None,
            discharged_at: None,
            discharge_method: None,
            destination: None,
        });
        self.stay_marks.push(StayMarks::default());
        self.stays.len() - 1
    }

    /// The stay an admission at `at` belongs to, among the episodes of one encounter id.
    ///
    /// The episode admitted at that time, else the discharged one whose stay it falls
    /// in (an A01 back-loaded after the A03, or after the visit number's next episode);
    /// else the latest, unless that one was discharged before `at`: admitted after its
    /// discharge under the same encounter id (a reused visit number) is a new episode, kept
    /// as a stay of its own, so the last one keeps its discharge, ready date and delay (and
    /// counts in the measures).
    fn admission_episode(&mut self, encounter_id: &str, source: &str, at: Timestamp) -> usize {
        let latest = self.stay_index(encounter_id, source);
        let (org, _) = source_org(&self.stays[latest].source);
        let episodes: Vec<usize> = (0..self.stays.len())
            .filter(|&i| {
                let s = &self.stays[i];
                s.encounter_id == encounter_id && source_org(&s.source).0 == org
            })
            .collect();
        let exact = episodes
            .iter()
            .rev()
            .find(|&&i| self.stays[i].admitted_at == Some(at));
        let within = || {
            episodes.iter().rev().find(|&&i| {
                let s = &self.stays[i];
                s.discharged_at.is_some_and(|x| at <= x) && s.admitted_at.is_none_or(|a| a <= at)
            })
        };
        if let Some(&i) = exact.or_else(within) {
            return i;
        }
        if self.stays[latest].discharged_at.is_some_and(|x| at > x) {
            self.push_stay(encounter_id, source)
        } else {
            latest
        }
    }

    fn stay(&mut self, encounter_id: &str, source: &str) -> &mut Stay {
        let i = self.stay_index(encounter_id, source);
        &mut self.stays[i]
    }

    /// The stay `encounter_id` names with its bookkeeping.
    fn stay_marked(&mut self, encounter_id: &str, source: &str) -> (&mut Stay, &mut StayMarks) {
        let i = self.stay_index(encounter_id, source);
        (&mut self.stays[i], &mut self.stay_marks[i])
    }

    fn referral(&mut self, referral_id: &str) -> &mut Referral {
        let i = match self
            .referrals
            .iter()
            .position(|r| r.referral_id == referral_id)
        {
            Some(i) => i,
            None => {
                self.referrals.push(Referral {
                    referral_id: referral_id.to_string(),
                    status: ReferralStatus::Sent,
                    to_council: None,
                    from_org: None,
                    encounter_id: None,
                    reason: None,
                    urgency: None,
                    proposed_discharge_date: None,
                    consent_obtained: None,
                    safeguarding_concern: None,
                    carer_involved: None,
                    sent_at: None,
                    responded_at: None,
                    team: None,
                    closed_reason: None,
                    assessments: Vec::new(),
                });
                self.referrals.len() - 1
            }
        };
        &mut self.referrals[i]
    }

    fn package(&mut self, package_id: &str) -> &mut Package {
        let i = match self
            .care_packages
            .iter()
            .position(|p| p.package_id == package_id)
        {
            Some(i) => i,
            None => {
                self.care_packages.push(Package {
                    package_id: package_id.to_string(),
                    status: PackageStatus::Requested,
                    service_type: None,
                    referral_id: None,
                    hours_per_week: None,
                    calls_per_day: None,
                    carers_per_call: None,
                    schedule: None,
                    required_start: None,
                    provider: None,
                    agreed_start: None,
                    started_on: None,
                    requested_at: None,
                    status_reason: None,
                    requested_by: None,
                });
                self.care_packages.len() - 1
            }
        };
        &mut self.care_packages[i]
    }

    /// Folds one event, recorded at stream sequence `seq`, into the state. Events are
    /// folded in event-time order (see [`StayMarks`] for where the sequence decides).
    pub(crate) fn fold(&mut self, data: &EventData, time: &Timestamp, seq: u64, source: &str) {
        use EventData as D;
        // A local id an event names its person by is one of theirs: for a person no system
        // has given an NHS number, it is what their identity and worklist rows show.
        if let Some(l) = data.local_id() {
            if !self.identity.local_ids.contains(l) {
                self.identity.local_ids.push(l.clone());
            }
        }
        match data {
            D::PersonIdentified(d) => {
                let id = &mut self.identity;
                // "02" (present, not traced) is what adapters say when the message said
                // nothing (an A08 without PID-32): it does not undo a verification ("01"),
                // which no trace takes back.
                let unverifies =
                    d.nhs_number_status == "02" && id.nhs_number_status.as_deref() == Some("01");
                if !unverifies {
                    id.nhs_number_status = Some(d.nhs_number_status.clone());
                }
                for l in &d.local_ids {
                    if !id.local_ids.contains(l) {
                        id.local_ids.push(l.clone());
                    }
                }
                macro_rules! latest {
                    ($($f:ident),*) => { $( if d.$f.is_some() { id.$f = d.$f.clone(); } )* };
                }
                latest!(given_name, family_name, birth_date, postcode, gp_practice);
            }
            D::PersonLinked(d) => {
                if !self.identity.local_ids.contains(&d.local_id) {
                    self.identity.local_ids.push(d.local_id.clone());
                }
            }
            D::NhsNumberChanged(d) => {
                let prev = d.previous_nhs_number.as_string();
                if !self.identity.previous_nhs_numbers.contains(&prev) {
                    self.identity.previous_nhs_numbers.push(prev);
                }
            }
            D::Admitted(d) => {
                let i = self.admission_episode(&d.encounter_id, source, d.admitted_at);
                let (s, m) = (&mut self.stays[i], &mut self.stay_marks[i]);
                if seq > m.admission {
                    m.admission = seq;
                    if s.status == StayStatus::Cancelled {
                        s.status = if s.discharged_at.is_some() {
                            StayStatus::Discharged
                        } else {
                            StayStatus::InHospital
                        };
                    }
                }
                s.site = Some(d.site.clone());
                s.admitted_at = Some(d.admitted_at);
                if d.ward.is_some() && !m.transferred {
                    s.ward = d.ward.clone();
                }
                s.admission_method = d.admission_method.or(s.admission_method);
                if d.responsible_council.is_some() {
                    s.responsible_council = d.responsible_council.clone();
                }
            }
            D::Transferred(d) => {
                let (s, m) = self.stay_marked(&d.encounter_id, source);
                s.ward = Some(d.ward.clone());
                m.transferred = true;
            }
            D::AdmissionCancelled(d) => {
                let (s, m) = self.stay_marked(&d.encounter_id, source);
                if seq > m.admission {
                    m.admission = seq;
                    s.status = StayStatus::Cancelled;
                }
            }
            D::ReadyDateRecorded(d) => {
                self.stay(&d.encounter_id, source).discharge_ready_date =
                    Some(d.discharge_ready_date)
            }
            D::PathwayAssigned(d) => {
                let (s, m) = self.stay_marked(&d.encounter_id, source);
                s.pathway = Some(d.pathway);
                m.assigned_pathway = Some(d.pathway);
            }
            D::ExpectedDateSet(d) => {
                self.stay(&d.encounter_id, source).expected_discharge_date =
                    Some(d.expected_discharge_date)
            }
            D::DelayRecorded(d) => {
                self.stay(&d.encounter_id, source).latest_delay = Some(Delay {
                    reason: d.reason,
                    attributed_to: d.attributed_to,
                    note: d.note.clone(),
                    recorded_at: *time,
                })
            }
            D::Discharged(d) => {
                let (s, m) = self.stay_marked(&d.encounter_id, source);
                if seq < m.discharge {
                    // A cancellation or another discharge recorded later stands.
                    return;
                }
                m.discharge = seq;
                s.status = StayStatus::Discharged;
                // A stay admitted before Handover saw it learns where and when it began.
                if s.admitted_at.is_none() {
                    s.admitted_at = d.admitted_at;
                }
                if s.site.is_none() {
                    s.site = d.site.clone();
                }
                if s.ward.is_none() {
                    s.ward = d.ward.clone();
                }
                s.discharged_at = Some(d.discharged_at);
                s.discharge_method = d.method;
                s.destination = d.destination;
                if d.pathway.is_some() {
                    s.pathway = d.pathway;
                }
            }
            D::DischargeCancelled(d) => {
                let (s, m) = self.stay_marked(&d.encounter_id, source);
                if seq < m.discharge {
                    // The discharge recorded after this cancellation stands.
                    return;
                }
                m.discharge = seq;
                if s.status == StayStatus::Discharged {
                    s.status = StayStatus::InHospital;
                }
                s.discharged_at = None;
                s.discharge_method = None;
                s.destination = None;
                // The pathway the cancelled discharge named goes with it.
                s.pathway = m.assigned_pathway;
            }
            D::ReferralSent(d) => {
                let r = self.referral(&d.referral_id);
                if matches!(
                    r.status,
                    ReferralStatus::Declined | ReferralStatus::Withdrawn
                ) {
                    // Sent again after it was declined or withdrawn: open again.
                    r.status = ReferralStatus::Sent;
                    r.responded_at = None;
                    r.team = None;
                    r.closed_reason = None;
                    // The last round's assessments do not answer this one.
                    r.assessments.clear();
                }
                r.to_council = Some(d.to_council.clone());
                r.from_org = Some(d.from_org.clone());
                r.encounter_id = d.encounter_id.clone().or(r.encounter_id.take());
                r.reason = d.reason.clone();
                r.urgency = d.urgency;
                r.proposed_discharge_date = d.proposed_discharge_date;
                r.consent_obtained = d.consent_obtained;
                r.safeguarding_concern = d.safeguarding_concern;
                r.carer_involved = d.carer_involved;
                r.sent_at = Some(*time);
            }
            D::ReferralAccepted(d) => {
                let r = self.referral(&d.referral_id);
                r.status = ReferralStatus::Accepted;
                r.responded_at = Some(*time);
                r.team = d.team.clone();
            }
            D::ReferralDeclined(d) | D::ReferralWithdrawn(d) => {
                let declined = matches!(data, D::ReferralDeclined(_));
                let r = self.referral(&d.referral_id);
                r.status = if declined {
                    ReferralStatus::Declined
                } else {
                    ReferralStatus::Withdrawn
                };
                r.responded_at = Some(*time);
                r.closed_reason = Some(d.reason.clone());
            }
            D::AssessmentCompleted(d) => {
                let r = self.referral(&d.referral_id);
                // A council that assessed under a referral has taken it, whether or not
                // its system sent the acceptance (or Handover saw the referral sent).
                if r.status == ReferralStatus::Sent {
                    r.status = ReferralStatus::Accepted;
                    r.responded_at.get_or_insert(*time);
                }
                r.assessments.push(Assessment {
                    assessment_type: d.assessment_type,
                    outcome: d.outcome,
                    completed_at: *time,
                })
            }
            // Both versions of a request fold through one shape (`PackageRequest`): v1 is
            // upcast with its flat figures and no schedule; v2's figures derive from its
            // schedule.
            D::PackageRequested(_) | D::PackageRequestedV2(_) => {
                let d: PackageRequest = match data {
                    D::PackageRequestedV2(d) => d.into(),
                    D::PackageRequested(d) => d.into(),
                    _ => return,
                };
                let p = self.package(&d.package_id);
                if matches!(p.status, PackageStatus::Cancelled | PackageStatus::Ended) {
                    // Requested again after it was cancelled or ended: brokerage starts over.
                    p.status = PackageStatus::Requested;
                    p.provider = None;
                    p.agreed_start = None;
                    p.started_on = None;
                    p.status_reason = None;
                }
                p.service_type = Some(d.service_type);
                p.referral_id = d.referral_id;
                p.schedule = d.schedule;
                p.hours_per_week = d.hours_per_week;
                p.calls_per_day = d.calls_per_day;
                p.carers_per_call = d.carers_per_call;
                p.required_start = d.required_start;
                p.requested_at = Some(*time);
                p.requested_by = match source_org(source) {
                    (council, "council") => Some(council),
                    _ => None,
                };
            }
            D::PackageSourced(d) => {
                let p = self.package(&d.package_id);
                if matches!(p.status, PackageStatus::Requested) {
                    p.status = PackageStatus::Sourced;
                }
                p.provider = Some(d.provider.clone());
                p.agreed_start = d.agreed_start;
            }
            D::PackageStarted(d) => {
                let p = self.package(&d.package_id);
                p.status = PackageStatus::Started;
                p.started_on = Some(d.started_on);
            }
            D::PackageSuspended(d) => {
                self.package_status(&d.package_id, PackageStatus::Suspended, &d.reason)
            }
            D::PackageResumed(d) => {
                self.package_status(&d.package_id, PackageStatus::Started, &d.reason)
            }
            D::PackageEnded(d) => {
                self.package_status(&d.package_id, PackageStatus::Ended, &d.reason)
            }
            D::PackageCancelled(d) => {
                self.package_status(&d.package_id, PackageStatus::Cancelled, &d.reason)
            }
        }
    }

    fn package_status(&mut self, id: &str, status: PackageStatus, reason: &Option<String>) {
        let p = self.package(id);
        p.status = status;
        p.status_reason = reason.clone();
    }

    /// The current stay: the most recently admitted stay still in hospital, else the
    /// most recently admitted one that was not cancelled. (With two stays open, the
    /// later one's discharge leaves the person in hospital on the earlier one.)
    ///
    /// A stay only named by a ready date, pathway, expected date or delay (no admission,
    /// transfer or discharge: an encounter id the trust's own events never used) comes
    /// last: it is not evidence that the person is in hospital.
    pub fn current_stay(&self) -> Option<&Stay> {
        let seen = |i: usize, s: &Stay| self.known(i, s);
        let latest = |pick: &dyn Fn(usize, &Stay) -> bool| {
            self.stays
                .iter()
                .enumerate()
                .filter(|(i, s)| s.status != StayStatus::Cancelled && pick(*i, s))
                .max_by_key(|(i, s)| (s.admitted_at, *i))
                .map(|(_, s)| s)
        };
        latest(&|i, s| s.status == StayStatus::InHospital && seen(i, s))
            .or_else(|| latest(&|i, s| seen(i, s)))
            .or_else(|| latest(&|_, _| true))
    }

    /// The stays in hospital that an admission, transfer or discharge made known (not only
    /// a ready date, pathway, expected date or delay naming an encounter id).
    pub fn open_stays(&self) -> impl Iterator<Item = &Stay> {
        self.stays
            .iter()
            .enumerate()
            .filter(|(i, s)| s.status == StayStatus::InHospital && self.known(*i, s))
            .map(|(_, s)| s)
    }

    /// The stays the worklist and the measures count, in stay order: those an admission,
    /// transfer or discharge made known, and the current stay. The current stay is found
    /// once, so this is linear in the number of stays.
    pub fn counted_stays(&self) -> impl Iterator<Item = &Stay> {
        let current = self.current_stay();
        self.stays.iter().enumerate().filter_map(move |(i, s)| {
            (current.is_some_and(|c| std::ptr::eq(c, s)) || self.known(i, s)).then_some(s)
        })
    }

    /// Whether an admission, transfer or discharge made the stay at `i` known.
    fn known(&self, i: usize, s: &Stay) -> bool {
        s.admitted_at.is_some()
            || s.discharged_at.is_some()
            || self.stay_marks.get(i).is_some_and(|m| m.transferred)
    }

    /// Days delayed for a stay as of `today`: None without a DRD, and for a cancelled
    /// admission (entered in error: no bed was occupied, as the measures count it).
    pub fn days_delayed(stay: &Stay, today: NaiveDate) -> Option<i64> {
        if stay.status == StayStatus::Cancelled {
            return None;
        }
        stay.discharge_ready_date
            .map(|drd| days_delayed(drd.0, stay.discharged_at.as_ref(), today))
    }
}

/// The organisation and sector behind an event source such as `urn:ods:RX1:pas`
/// (NHS, by ODS code) or `urn:gss:E08000035:mosaic` (council, by GSS code).
pub fn source_org(source: &str) -> (String, &'static str) {
    let mut parts = source.split(':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("urn"), Some("ods"), Some(code)) => (code.to_string(), "nhs"),
        (Some("urn"), Some("gss"), Some(code)) => (code.to_string(), "council"),
        _ => (source.to_string(), "other"),
    }
}
