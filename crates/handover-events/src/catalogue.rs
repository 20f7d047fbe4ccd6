//! The v1 event catalogue: every event type and its data, as typed Rust.
//!
//! The `catalogue!` invocation at the bottom is the one registry of types: the type
//! strings, the data structs, the schemas and the decoder all come from it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::nhs::NhsNumber;
use crate::time::{Date, Timestamp};

/// A person identifier issued by a local system (hospital MRN, council case id).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct LocalId {
    /// The issuing system, as a URI (e.g. `https://rx1.nhs.uk/id/mrn`) or a name.
    #[schemars(length(min = 1))]
    pub system: String,
    /// The identifier within that system.
    #[schemars(length(min = 1))]
    pub value: String,
}

macro_rules! kebab_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $variant),+ }
        impl $name {
            /// The wire code.
            pub fn as_str(&self) -> &'static str { match self { $(Self::$variant => $s),+ } }
            /// Every code, in order.
            pub const CODES: &'static [&'static str] = &[$($s),+];
        }
        impl JsonSchema for $name {
            fn inline_schema() -> bool { true }
            fn schema_name() -> std::borrow::Cow<'static, str> { stringify!($name).into() }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({ "type": "string", "enum": [$($s),+] })
            }
        }
    };
}

kebab_enum!(
    /// How the patient was admitted.
    AdmissionMethod { /// Emergency admission.
    Emergency = "emergency", /// Elective (planned) admission.
    Elective = "elective", /// Maternity admission.
    Maternity = "maternity", /// Transfer from another provider.
    Transfer = "transfer", /// Any other method.
    Other = "other" });

kebab_enum!(
    /// Where the patient went on discharge.
    Destination { /// Their usual place of residence.
    UsualResidence = "usual-residence", /// A care home.
    CareHome = "care-home", /// A community (intermediate care) bed.
    CommunityBed = "community-bed", /// A hospice.
    Hospice = "hospice", /// The patient died.
    Died = "died", /// Anywhere else.
    Other = "other" });

kebab_enum!(
    /// Who a delay is attributed to.
    Attribution { /// The NHS.
    Nhs = "nhs", /// The council (social care).
    Council = "council", /// Both.
    Joint = "joint" });

kebab_enum!(
    /// Why a patient past their discharge ready date is still in hospital.
    DelayReason {
    /// Awaiting a social care or health assessment.
    AwaitingAssessment = "awaiting-assessment",
    /// Awaiting a home care package.
    AwaitingCarePackage = "awaiting-care-package",
    /// Awaiting reablement.
    AwaitingReablement = "awaiting-reablement",
    /// Awaiting a residential home bed.
    AwaitingResidentialBed = "awaiting-residential-bed",
    /// Awaiting a nursing home bed.
    AwaitingNursingBed = "awaiting-nursing-bed",
    /// Awaiting a community rehabilitation bed.
    AwaitingCommunityRehabBed = "awaiting-community-rehab-bed",
    /// Awaiting equipment or adaptations.
    AwaitingEquipment = "awaiting-equipment",
    /// Awaiting transport.
    AwaitingTransport = "awaiting-transport",
    /// Awaiting medicines to take home.
    AwaitingMedicines = "awaiting-medicines",
    /// Awaiting the discharge summary.
    AwaitingDischargeSummary = "awaiting-discharge-summary",
    /// A hospital process.
    HospitalProcess = "hospital-process",
    /// Patient or family choice.
    PatientFamilyChoice = "patient-family-choice",
    /// Housing.
    Housing = "housing",
    /// A safeguarding matter.
    Safeguarding = "safeguarding",
    /// Anything else.
    Other = "other" });

kebab_enum!(
    /// Referral urgency.
    Urgency { /// Routine.
    Routine = "routine", /// Urgent.
    Urgent = "urgent" });

kebab_enum!(
    /// Kind of Care Act assessment.
    AssessmentType { /// s9 needs assessment.
    Needs = "needs", /// s10 carer's assessment.
    Carer = "carer", /// Occupational therapy assessment.
    OccupationalTherapy = "occupational-therapy", /// Financial assessment.
    Financial = "financial" });

kebab_enum!(
    /// Outcome of an assessment.
    AssessmentOutcome { /// Eligible needs (s13).
    Eligible = "eligible", /// Not eligible.
    NotEligible = "not-eligible", /// No assessment needed.
    NoAssessmentNeeded = "no-assessment-needed" });

kebab_enum!(
    /// Kind of care package.
    ServiceType { /// Home care (domiciliary).
    HomeCare = "home-care", /// Reablement (free for the first six weeks).
    Reablement = "reablement", /// Residential care home placement.
    Residential = "residential", /// Nursing home placement.
    Nursing = "nursing", /// Community bed-based rehabilitation.
    CommunityBed = "community-bed", /// Equipment.
    Equipment = "equipment", /// Anything else.
    Other = "other" });

/// A D2A pathway, 0 to 3.
pub type Pathway = u8;

/// An organisation code (ODS or GSS) as read: trimmed and upper-cased, as both registers
/// write them, so `e08000035` and `E08000035` are one council.
fn code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(String::deserialize(d)?.trim().to_ascii_uppercase())
}

/// An optional organisation code (or postcode), as [`code`].
fn some_code<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(|s| s.trim().to_ascii_uppercase()))
}

/// An NHS number verification status as its two-digit code (`1` is `01`).
fn two_digit_status<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let s = s.trim();
    Ok(if s.len() == 1 {
        format!("0{s}")
    } else {
        s.to_owned()
    })
}

/// `handover.person.identified.v1`: who the person is, as a source system knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PersonIdentified {
    /// UK Core NHS number verification status code `01` to `08` (e.g. `01` number present
    /// and verified); a single digit is read as its two-digit code.
    #[schemars(regex(pattern = r"^0?[1-8]$"))]
    #[serde(deserialize_with = "two_digit_status")]
    pub nhs_number_status: String,
    /// The person's identifiers in local systems (empty when the sender gave only the NHS
    /// number).
    pub local_ids: Vec<LocalId>,
    /// Given name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// Date of birth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<Date>,
    /// Postcode of the usual address (upper-cased when read, as Royal Mail writes it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_code"
    )]
    pub postcode: Option<String>,
    /// ODS code of the registered GP practice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gp_practice: Option<String>,
}

/// `handover.person.linked.v1`: a local id now known to belong to the subject's NHS number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PersonLinked {
    /// The local identifier being linked.
    pub local_id: LocalId,
}

/// `handover.person.nhs-number-changed.v1`: the subject replaces a previous NHS number (merge).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NhsNumberChanged {
    /// The NHS number now superseded by the subject.
    pub previous_nhs_number: NhsNumber,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.admitted.v1`: the start of a hospital stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Admitted {
    /// The hospital's encounter (spell) id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// ODS site code.
    #[schemars(length(min = 1))]
    pub site: String,
    /// When the patient was admitted.
    pub admitted_at: Timestamp,
    /// Ward on admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// How the patient was admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission_method: Option<AdmissionMethod>,
    /// GSS code of the council responsible for the person's social care.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_code"
    )]
    #[schemars(regex(pattern = r"^ *[EeWwSsNn][0-9]{8} *$"))]
    pub responsible_council: Option<String>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.transferred.v1`: a ward move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Transferred {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// The new ward.
    #[schemars(length(min = 1))]
    pub ward: String,
    /// The ward left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_ward: Option<String>,
    /// When the move happened (defaults to the event time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// An event that refers to an encounter and nothing else (cancellations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EncounterRef {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.ready-date-recorded.v1`: the discharge ready date (DRD).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReadyDateRecorded {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// The date the patient stopped meeting the criteria to reside.
    pub discharge_ready_date: Date,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.pathway-assigned.v1`: the D2A pathway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PathwayAssigned {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// Pathway 0 (home, no new support) to 3 (care home for the first time).
    #[schemars(range(min = 0, max = 3))]
    pub pathway: Pathway,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.expected-date-set.v1`: the expected discharge date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExpectedDateSet {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// The expected date of discharge.
    pub expected_discharge_date: Date,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.delay-recorded.v1`: why a ready patient is still in hospital.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DelayRecorded {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// The delay reason code.
    pub reason: DelayReason,
    /// Who the delay is attributed to.
    pub attributed_to: Attribution,
    /// Free-text note (clinical detail; minimised for some roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.discharge.discharged.v1`: the end of a hospital stay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Discharged {
    /// The encounter id.
    #[schemars(length(min = 1))]
    pub encounter_id: String,
    /// When the patient left.
    pub discharged_at: Timestamp,
    /// UK Core discharge method, 1 (clinical advice) to 5 (stillbirth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5))]
    pub method: Option<u8>,
    /// Where the patient went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<Destination>,
    /// The pathway they left on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3))]
    pub pathway: Option<Pathway>,
    /// When the stay began, as the sender knows it (HL7 PV1-44, FHIR `period.start`).
    /// Fills in a stay whose admission Handover never saw (admitted before go-live).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<Timestamp>,
    /// ODS site code of the stay, for a stay whose admission Handover never saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub site: Option<String>,
    /// The ward the patient left from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub ward: Option<String>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.referral.sent.v1`: a hospital refers a person to a council.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralSent {
    /// The referral id.
    #[schemars(length(min = 1))]
    pub referral_id: String,
    /// GSS code of the council referred to (`E08000035`; upper-cased when read).
    #[schemars(regex(pattern = r"^ *[EeWwSsNn][0-9]{8} *$"))]
    #[serde(deserialize_with = "code")]
    pub to_council: String,
    /// ODS code of the referring organisation (upper-cased when read).
    #[schemars(regex(pattern = r"^ *[A-Za-z0-9]{3,9} *$"))]
    #[serde(deserialize_with = "code")]
    pub from_org: String,
    /// The encounter the referral is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encounter_id: Option<String>,
    /// Why the person is referred (clinical detail; minimised for some roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Routine or urgent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgency: Option<Urgency>,
    /// Community Living Dataset route of access code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_of_access: Option<String>,
    /// The proposed discharge date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposed_discharge_date: Option<Date>,
    /// Whether the person consented to the referral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_obtained: Option<bool>,
    /// Whether there is a safeguarding concern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safeguarding_concern: Option<bool>,
    /// Whether a carer is involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carer_involved: Option<bool>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.referral.accepted.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralAccepted {
    /// The referral id.
    #[schemars(length(min = 1))]
    pub referral_id: String,
    /// The council team that took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.referral.declined.v1` and `handover.referral.withdrawn.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferralClosed {
    /// The referral id.
    #[schemars(length(min = 1))]
    pub referral_id: String,
    /// Why.
    #[schemars(length(min = 1))]
    pub reason: String,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.referral.assessment-completed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AssessmentCompleted {
    /// The referral id.
    #[schemars(length(min = 1))]
    pub referral_id: String,
    /// Kind of assessment.
    pub assessment_type: AssessmentType,
    /// Its outcome.
    pub outcome: AssessmentOutcome,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.care-package.requested.v1`: brokerage is asked to source a package.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageRequested {
    /// The package id.
    #[schemars(length(min = 1))]
    pub package_id: String,
    /// Kind of service.
    pub service_type: ServiceType,
    /// The referral it follows from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// Hours of care per week.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 168.0))]
    pub hours_per_week: Option<f64>,
    /// Calls (visits) per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 24))]
    pub calls_per_day: Option<u8>,
    /// Carers per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4))]
    pub carers_per_call: Option<u8>,
    /// When the package is needed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_start: Option<Date>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

kebab_enum!(
    /// A day of the week.
    Weekday { /// Monday.
    Mon = "mon", /// Tuesday.
    Tue = "tue", /// Wednesday.
    Wed = "wed", /// Thursday.
    Thu = "thu", /// Friday.
    Fri = "fri", /// Saturday.
    Sat = "sat", /// Sunday.
    Sun = "sun" });

/// One recurring visit of a care schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Visit {
    /// The days of the week it happens on.
    #[schemars(length(min = 1, max = 7))]
    pub days: Vec<Weekday>,
    /// Local (Europe/London) start time, `HH:MM`.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub time: String,
    /// How long it lasts, in minutes.
    #[schemars(range(min = 1, max = 1440))]
    pub duration_minutes: u16,
    /// Carers needed at once.
    #[schemars(range(min = 1, max = 4))]
    pub carers: u8,
}

/// A care package's weekly schedule (`handover.care-package.requested.v2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The recurring visits.
    #[schemars(length(min = 1))]
    pub visits: Vec<Visit>,
}

impl Schedule {
    /// Hours of care per week: each visit's duration times its days (not times its carers:
    /// the hours are the person's, as v1's `hours_per_week` counted them).
    pub fn hours_per_week(&self) -> f64 {
        let minutes: u32 = self
            .visits
            .iter()
            .map(|v| u32::from(v.duration_minutes) * v.days.len() as u32)
            .sum();
        f64::from(minutes) / 60.0
    }

    /// The most visits on any one day (v1's `calls_per_day`).
    pub fn calls_per_day(&self) -> u8 {
        [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ]
        .iter()
        .map(|d| self.visits.iter().filter(|v| v.days.contains(d)).count())
        .max()
        .unwrap_or(0)
        .min(usize::from(u8::MAX)) as u8
    }

    /// The most carers any visit needs (v1's `carers_per_call`).
    pub fn carers_per_call(&self) -> u8 {
        self.visits.iter().map(|v| v.carers).max().unwrap_or(0)
    }
}

/// `handover.care-package.requested.v2`: as v1, with a structured weekly `schedule` in
/// place of the flat `hours_per_week`, `calls_per_day` and `carers_per_call`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageRequestedV2 {
    /// The package id.
    #[schemars(length(min = 1))]
    pub package_id: String,
    /// Kind of service.
    pub service_type: ServiceType,
    /// The referral it follows from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral_id: Option<String>,
    /// The visits asked for (none for services without visits, e.g. equipment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// When the package is needed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_start: Option<Date>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// What a care-package request of any version says, in the read model's terms: v2 as is,
/// v1 upcast (its flat figures kept, no schedule: v1 never said on which days or at what
/// time, so none is invented).
#[derive(Debug, Clone, PartialEq)]
pub struct PackageRequest {
    /// The package id.
    pub package_id: String,
    /// Kind of service.
    pub service_type: ServiceType,
    /// The referral it follows from.
    pub referral_id: Option<String>,
    /// The v2 schedule, when the request was v2.
    pub schedule: Option<Schedule>,
    /// Hours per week (v1's figure, or derived from the v2 schedule).
    pub hours_per_week: Option<f64>,
    /// Calls per day (v1's figure, or derived from the v2 schedule).
    pub calls_per_day: Option<u8>,
    /// Carers per call (v1's figure, or derived from the v2 schedule).
    pub carers_per_call: Option<u8>,
    /// When the package is needed from.
    pub required_start: Option<Date>,
}

impl From<&PackageRequested> for PackageRequest {
    fn from(d: &PackageRequested) -> Self {
        PackageRequest {
            package_id: d.package_id.clone(),
            service_type: d.service_type,
            referral_id: d.referral_id.clone(),
            schedule: None,
            hours_per_week: d.hours_per_week,
            calls_per_day: d.calls_per_day,
            carers_per_call: d.carers_per_call,
            required_start: d.required_start,
        }
    }
}

impl From<&PackageRequestedV2> for PackageRequest {
    fn from(d: &PackageRequestedV2) -> Self {
        let s = d.schedule.as_ref();
        PackageRequest {
            package_id: d.package_id.clone(),
            service_type: d.service_type,
            referral_id: d.referral_id.clone(),
            schedule: d.schedule.clone(),
            hours_per_week: s.map(Schedule::hours_per_week),
            calls_per_day: s.map(Schedule::calls_per_day),
            carers_per_call: s.map(Schedule::carers_per_call),
            required_start: d.required_start,
        }
    }
}

/// `handover.care-package.sourced.v1`: a provider has agreed to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageSourced {
    /// The package id.
    #[schemars(length(min = 1))]
    pub package_id: String,
    /// The provider (CQC location id or name).
    #[schemars(length(min = 1))]
    pub provider: String,
    /// The agreed start date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreed_start: Option<Date>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.care-package.started.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageStarted {
    /// The package id.
    #[schemars(length(min = 1))]
    pub package_id: String,
    /// The date care started.
    pub started_on: Date,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// `handover.care-package.{suspended,resumed,ended,cancelled}.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PackageChange {
    /// The package id.
    #[schemars(length(min = 1))]
    pub package_id: String,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Local id when the sender does not know the NHS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<LocalId>,
}

/// The domains of the catalogue; the second token of a NATS subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Domain {
    /// Person identity.
    Person,
    /// Hospital stays and discharge.
    Discharge,
    /// Referrals to social care.
    Referral,
    /// Care packages and brokerage.
    CarePackage,
}

impl Domain {
    /// The subject token.
    pub fn as_str(&self) -> &'static str {
        match self {
            Domain::Person => "person",
            Domain::Discharge => "discharge",
            Domain::Referral => "referral",
            Domain::CarePackage => "care-package",
        }
    }
}

macro_rules! catalogue {
    ($( $variant:ident => $ty:literal, $domain:ident, $name:literal, $data:ident; )+) => {
        /// Every event type of the v1 catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $(
            #[doc = concat!("`", $ty, "`")]
            $variant
        ),+ }

        /// Typed event data, one variant per event type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventData { $(
            #[doc = concat!("`", $ty, "`")]
            $variant($data)
        ),+ }

        impl EventType {
            /// All types, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),+];

            /// The CloudEvents `type` string.
            pub fn as_str(&self) -> &'static str { match self { $(EventType::$variant => $ty),+ } }

            /// Looks a `type` string up in the catalogue.
            pub fn parse(s: &str) -> Option<EventType> { match s { $($ty => Some(EventType::$variant),)+ _ => None } }

            /// The domain the type belongs to.
            pub fn domain(&self) -> Domain { match self { $(EventType::$variant => Domain::$domain),+ } }

            /// The event name within its domain (a subject token), e.g. `ready-date-recorded`.
            pub fn name(&self) -> &'static str { match self { $(EventType::$variant => $name),+ } }

            /// The JSON Schema of this type's `data`.
            pub fn data_schema(&self) -> schemars::Schema {
                match self { $(EventType::$variant => schemars::SchemaGenerator::default().into_root_schema_for::<$data>()),+ }
            }

            /// Decodes `data` of this type from its JSON text.
            pub fn decode_data_str(&self, data: &str) -> Result<EventData, serde_json::Error> {
                match self { $(EventType::$variant => serde_json::from_str::<$data>(data).map(EventData::$variant)),+ }
            }

            /// Decodes `data` of this type.
            pub fn decode_data(&self, data: serde_json::Value) -> Result<EventData, serde_json::Error> {
                match self { $(EventType::$variant => serde_json::from_value::<$data>(data).map(EventData::$variant)),+ }
            }
        }

        impl EventData {
            /// The type of this data.
            pub fn event_type(&self) -> EventType { match self { $(EventData::$variant(_) => EventType::$variant),+ } }

            /// Encodes this data as JSON.
            pub fn to_json(&self) -> serde_json::Value {
                let r = match self { $(EventData::$variant(d) => serde_json::to_value(d)),+ };
                // Serialising these plain structs cannot fail: no maps with non-string keys.
                r.unwrap_or(serde_json::Value::Null)
            }
        }
    };
}

catalogue! {
    PersonIdentified => "handover.person.identified.v1", Person, "identified", PersonIdentified;
    PersonLinked => "handover.person.linked.v1", Person, "linked", PersonLinked;
    NhsNumberChanged => "handover.person.nhs-number-changed.v1", Person, "nhs-number-changed", NhsNumberChanged;
    Admitted => "handover.discharge.admitted.v1", Discharge, "admitted", Admitted;
    Transferred => "handover.discharge.transferred.v1", Discharge, "transferred", Transferred;
    AdmissionCancelled => "handover.discharge.admission-cancelled.v1", Discharge, "admission-cancelled", EncounterRef;
    ReadyDateRecorded => "handover.discharge.ready-date-recorded.v1", Discharge, "ready-date-recorded", ReadyDateRecorded;
    PathwayAssigned => "handover.discharge.pathway-assigned.v1", Discharge, "pathway-assigned", PathwayAssigned;
    ExpectedDateSet => "handover.discharge.expected-date-set.v1", Discharge, "expected-date-set", ExpectedDateSet;
    DelayRecorded => "handover.discharge.delay-recorded.v1", Discharge, "delay-recorded", DelayRecorded;
    Discharged => "handover.discharge.discharged.v1", Discharge, "discharged", Discharged;
    DischargeCancelled => "handover.discharge.discharge-cancelled.v1", Discharge, "discharge-cancelled", EncounterRef;
    ReferralSent => "handover.referral.sent.v1", Referral, "sent", ReferralSent;
    ReferralAccepted => "handover.referral.accepted.v1", Referral, "accepted", ReferralAccepted;
    ReferralDeclined => "handover.referral.declined.v1", Referral, "declined", ReferralClosed;
    ReferralWithdrawn => "handover.referral.withdrawn.v1", Referral, "withdrawn", ReferralClosed;
    AssessmentCompleted => "handover.referral.assessment-completed.v1", Referral, "assessment-completed", AssessmentCompleted;
    PackageRequested => "handover.care-package.requested.v1", CarePackage, "requested", PackageRequested;
    PackageRequestedV2 => "handover.care-package.requested.v2", CarePackage, "requested", PackageRequestedV2;
    PackageSourced => "handover.care-package.sourced.v1", CarePackage, "sourced", PackageSourced;
    PackageStarted => "handover.care-package.started.v1", CarePackage, "started", PackageStarted;
    PackageSuspended => "handover.care-package.suspended.v1", CarePackage, "suspended", PackageChange;
    PackageResumed => "handover.care-package.resumed.v1", CarePackage, "resumed", PackageChange;
    PackageEnded => "handover.care-package.ended.v1", CarePackage, "ended", PackageChange;
    PackageCancelled => "handover.care-package.cancelled.v1", CarePackage, "cancelled", PackageChange;
}

impl EventData {
    /// The `data.local_id` of the event, when its sender gave one.
    pub fn local_id(&self) -> Option<&LocalId> {
        use EventData::*;
        match self {
            PersonIdentified(d) => d.local_ids.first(),
            PersonLinked(d) => Some(&d.local_id),
            NhsNumberChanged(d) => d.local_id.as_ref(),
            Admitted(d) => d.local_id.as_ref(),
            Transferred(d) => d.local_id.as_ref(),
            AdmissionCancelled(d) | DischargeCancelled(d) => d.local_id.as_ref(),
            ReadyDateRecorded(d) => d.local_id.as_ref(),
            PathwayAssigned(d) => d.local_id.as_ref(),
            ExpectedDateSet(d) => d.local_id.as_ref(),
            DelayRecorded(d) => d.local_id.as_ref(),
            Discharged(d) => d.local_id.as_ref(),
            ReferralSent(d) => d.local_id.as_ref(),
            ReferralAccepted(d) => d.local_id.as_ref(),
            ReferralDeclined(d) | ReferralWithdrawn(d) => d.local_id.as_ref(),
            AssessmentCompleted(d) => d.local_id.as_ref(),
            PackageRequested(d) => d.local_id.as_ref(),
            PackageRequestedV2(d) => d.local_id.as_ref(),
            PackageSourced(d) => d.local_id.as_ref(),
            PackageStarted(d) => d.local_id.as_ref(),
            PackageSuspended(d) | PackageResumed(d) | PackageEnded(d) | PackageCancelled(d) => {
                d.local_id.as_ref()
            }
        }
    }
}
