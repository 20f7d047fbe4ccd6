//! Synthetic demo data: a deterministic, believable week of care events.
//!
//! [`demo_week`] tells the story of about 300 older adults admitted to two
//! hospitals (RX1 and RR8) whose discharges involve two councils (Leeds,
//! E08000035, and Bradford, E08000032), as CloudEvents 1.0 JSON values.
//! Everything is synthetic: NHS numbers are in the 999 test range, names are
//! drawn from short lists, and the same seed always gives the same events.
//!
//! Stories follow the real shape of a discharge: admission, ward moves, a
//! discharge ready date (DRD), a discharge pathway; for pathways 1–3 a
//! referral to the responsible council, acceptance, assessment and a care
//! package that is requested, sourced and started, with the discharge on the
//! start day. About a third of those are still waiting at `today`, and
//! delay-recorded events say why and whose responsibility the wait is.
//!
//! People admitted before the week are included with their earlier history
//! (admission, DRD, referral...), so every event's causes are in the list.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Weekday};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// How many people the demo week follows.
pub const DEMO_PEOPLE: usize = 300;

/// A hospital trust with one site.
struct Hospital {
    ods: &'static str,
    source: &'static str,
    site: &'static str,
    mrn_system: &'static str,
    /// Index into [`COUNCILS`] of the council most patients live in.
    home_council: usize,
    wards: &'static [&'static str],
}

const HOSPITALS: [Hospital; 2] = [
    Hospital {
        ods: "RX1",
        source: "urn:ods:RX1:pas",
        site: "RX1CC",
        mrn_system: "https://rx1.nhs.uk/id/mrn",
        home_council: 0,
        wards: &[
            "Ward 7",
            "Ward 12",
            "Ward 14",
            "Elderly Care 3",
            "Elderly Care 4",
            "Ward 21 (Respiratory)",
            "Ward 9 (Orthopaedics)",
            "Stroke Unit",
        ],
    },
    Hospital {
        ods: "RR8",
        source: "urn:ods:RR8:epr",
        site: "RR801",
        mrn_system: "https://rr8.nhs.uk/id/mrn",
        home_council: 1,
        wards: &[
            "Ward J11",
            "Ward J14",
            "Ward 18",
            "Elderly Care 1",
            "Elderly Care 2",
            "Ward 28 (Orthogeriatrics)",
            "Ward 5 (Cardiology)",
        ],
    },
];

/// A council with its case-management and brokerage sources.
struct Council {
    gss: &'static str,
    source: &'static str,
    brokerage: &'static str,
    postcode_area: &'static str,
    postcode_districts: u32,
    gp_prefix: &'static str,
}

const COUNCILS: [Council; 2] = [
    Council {
        gss: "E08000035",
        source: "urn:gss:E08000035:mosaic",
        brokerage: "urn:gss:E08000035:brokerage",
        postcode_area: "LS",
        postcode_districts: 29,
        gp_prefix: "B86",
    },
    Council {
        gss: "E08000032",
        source: "urn:gss:E08000032:liquidlogic",
        brokerage: "urn:gss:E08000032:brokerage",
        postcode_area: "BD",
        postcode_districts: 22,
        gp_prefix: "B83",
    },
];

const GIVEN_NAMES: &[&str] = &[
    "Margaret", "Dorothy", "Joan", "Jean", "Betty", "Patricia", "Barbara", "Doreen", "Irene",
    "Sheila", "Eileen", "Brenda", "Maureen", "Kathleen", "Elsie", "Edna", "Mavis", "Pauline",
    "Sylvia", "Shirley", "Nasreen", "Parveen", "John", "William", "George", "Arthur", "Kenneth",
    "Ronald", "Peter", "David", "Brian", "Derek", "Roy", "Frank", "Dennis", "Harold", "Albert",
    "Stanley", "Raymond", "Michael", "Alan", "Keith", "Mohammed", "Abdul", "Gurdev",
];

const FAMILY_NAMES: &[&str] = &[
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Wilson",
    "Johnson",
    "Walker",
    "Wright",
    "Robinson",
    "Thompson",
    "White",
    "Hughes",
    "Edwards",
    "Green",
    "Hall",
    "Wood",
    "Harris",
    "Lewis",
    "Martin",
    "Jackson",
    "Clarke",
    "Turner",
    "Hill",
    "Scott",
    "Cooper",
    "Ward",
    "Morris",
    "King",
    "Watson",
    "Baker",
    "Harrison",
    "Morgan",
    "Shaw",
    "Holmes",
    "Sutcliffe",
    "Patel",
    "Hussain",
    "Khan",
    "Ahmed",
    "Begum",
    "Kaur",
    "Singh",
];

/// Care providers as CQC location ids.
const PROVIDERS: &[&str] = &[
    "1-101634512",
    "1-102238741",
    "1-103317745",
    "1-104872230",
    "1-105561298",
    "1-106640077",
    "1-107723154",
    "1-108195603",
    "1-109954217",
    "1-110387642",
    "1-111209876",
    "1-112478351",
];

/// Why someone is still in hospital, and whose responsibility it is.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Wait {
    reason: &'static str,
    attributed_to: &'static str,
    note: &'static str,
}

const fn wait(reason: &'static str, attributed_to: &'static str, note: &'static str) -> Wait {
    Wait {
        reason,
        attributed_to,
        note,
    }
}

const W_HOSPITAL: Wait = wait(
    "hospital-process",
    "nhs",
    "Referral to social care being prepared",
);
const W_REPLAN: Wait = wait("hospital-process", "nhs", "Discharge plan being revised");
const W_ASSESS: Wait = wait(
    "awaiting-assessment",
    "council",
    "Awaiting social work assessment",
);
const W_SAFEGUARDING: Wait = wait(
    "safeguarding",
    "council",
    "Safeguarding concern under review",
);
const W_PRIVATE: Wait = wait(
    "patient-family-choice",
    "joint",
    "Family arranging private care at home",
);

/// Waits after the day of the DRD for people on pathway 0.
const PATHWAY0_SHORT_WAITS: &[Wait] = &[
    wait(
        "awaiting-medicines",
        "nhs",
        "Medicines to take home not yet dispensed",
    ),
    wait(
        "awaiting-transport",
        "nhs",
        "Patient transport booked for tomorrow",
    ),
    wait(
        "awaiting-discharge-summary",
        "nhs",
        "Discharge summary not yet completed",
    ),
    wait(
        "hospital-process",
        "nhs",
        "Awaiting consultant review before discharge",
    ),
    wait(
        "patient-family-choice",
        "joint",
        "Family unable to collect until tomorrow",
    ),
];

/// Long waits that keep someone on pathway 0 in hospital past the week.
const PATHWAY0_LONG_WAITS: &[Wait] = &[
    wait(
        "housing",
        "council",
        "Home not suitable; adaptations needed",
    ),
    wait(
        "awaiting-equipment",
        "joint",
        "Awaiting hospital bed and hoist at home",
    ),
    wait(
        "patient-family-choice",
        "joint",
        "Family considering care home options",
    ),
    wait("other", "nhs", "Awaiting mental capacity assessment"),
];

/// What kind of care package a pathway leads to, and its wait.
fn package_wait(service_type: &str, sourced: bool) -> Wait {
    match (service_type, sourced) {
        ("reablement", false) => wait(
            "awaiting-reablement",
            "council",
            "Awaiting reablement capacity",
        ),
        ("reablement", true) => wait(
            "awaiting-reablement",
            "council",
            "Reablement start date agreed",
        ),
        ("home-care", false) => wait(
            "awaiting-care-package",
            "council",
            "Awaiting home care provider",
        ),
        ("home-care", true) => wait(
            "awaiting-care-package",
            "council",
            "Provider found; awaiting start",
        ),
        ("community-bed", _) => wait(
            "awaiting-community-rehab-bed",
            "nhs",
            "Awaiting community rehabilitation bed",
        ),
        ("residential", false) => wait(
            "awaiting-residential-bed",
            "council",
            "Awaiting care home placement",
        ),
        ("residential", true) => wait(
            "awaiting-residential-bed",
            "council",
            "Care home bed agreed; awaiting move",
        ),
        ("nursing", _) => wait(
            "awaiting-nursing-bed",
            "joint",
            "Awaiting nursing home placement",
        ),
        _ => wait("other", "joint", "Awaiting support at home"),
    }
}

const REFERRAL_REASONS: [&[&str]; 4] = [
    &[],
    &[
        "Reduced mobility after fall; needs support with personal care at home",
        "Deconditioned after pneumonia; reablement to regain independence",
        "New support needs with washing and dressing",
        "Carer breakdown; increased care needs at home",
        "Post-operative support needed after hip fracture repair",
    ],
    &[
        "Needs a period of bed-based rehabilitation before returning home",
        "Not yet safe to go home; step-down rehabilitation bed required",
    ],
    &[
        "Needs 24-hour care; unable to return home safely",
        "Advanced dementia; long-term care home placement needed",
    ],
];

const DECLINE_REASONS: &[&str] = &[
    "Person is ordinarily resident in another council area",
    "Needs can be met by community health services",
    "Person declined social care involvement",
];

const WITHDRAW_REASONS: &[&str] = &[
    "Mobility improved; no longer needs support on discharge",
    "Family now providing care at home",
];

/// Where a story stops because it is still waiting at `today`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stuck {
    NotAccepted,
    AwaitingAssessment,
    NotSourced,
    StartInFuture,
}

struct Person {
    nhs: String,
    hospital: usize,
    council: usize,
    given: &'static str,
    family: &'static str,
    birth_date: NaiveDate,
    postcode: String,
    gp: String,
    mrn: String,
}

struct StayPlan {
    admitted_at: NaiveDateTime,
    pathway: u8,
    stuck: Option<Stuck>,
    /// Pathway 0 only: still in hospital at `today` for a non-care reason.
    long_wait: bool,
    /// Identifies the person before the admission (first stay only).
    identify: bool,
    /// A readmission follows, so any package is suspended, not ended.
    readmitted: bool,
}

/// What came of a stay, for a possible readmission.
struct StayOutcome {
    discharged_at: Option<NaiveDateTime>,
    /// The council index and id of a package that started at discharge.
    package: Option<(usize, String)>,
}

/// An event before ids are given.
struct Raw {
    time: NaiveDateTime,
    source: &'static str,
    ty: &'static str,
    subject: String,
    data: Value,
}

struct Gen {
    rng: StdRng,
    today: NaiveDate,
    week_start: NaiveDateTime,
    end: NaiveDateTime,
    raw: Vec<Raw>,
    encounters: [u32; 2],
    referrals: [u32; 2],
    packages: [u32; 2],
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN)
}

fn minutes(m: i64) -> TimeDelta {
    TimeDelta::minutes(m)
}

fn days(d: i64) -> TimeDelta {
    TimeDelta::days(d)
}

fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Adds `mins` working minutes (08:30–17:00, optionally weekdays only).
///
/// The result is always within working hours.
fn add_working(mut t: NaiveDateTime, mut mins: i64, weekdays_only: bool) -> NaiveDateTime {
    loop {
        let d = t.date();
        let open = d.and_time(hm(8, 30));
        let close = d.and_time(hm(17, 0));
        let weekend = matches!(d.weekday(), Weekday::Sat | Weekday::Sun);
        if (weekdays_only && weekend) || t >= close {
            t = (d + days(1)).and_time(hm(8, 30));
            continue;
        }
        if t < open {
            t = open;
        }
        let available = (close - t).num_minutes();
        if mins < available {
            return t + minutes(mins);
        }
        mins -= available;
        t = (d + days(1)).and_time(hm(8, 30));
    }
}

/// The Modulus 11 check digit for nine digits, or `None` if it would be 10.
fn nhs_check_digit(nine: u64) -> Option<u64> {
    let digits: Vec<u64> = format!("{nine:09}")
        .bytes()
        .map(|b| u64::from(b - b'0'))
        .collect();
    let sum: u64 = digits.iter().zip((2..=10).rev()).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => Some(c),
    }
}

impl Gen {
    fn new(seed: u64, today: NaiveDate) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            today,
            week_start: (today - days(6)).and_time(NaiveTime::MIN),
            end: today.and_time(hm(17, 0)),
            raw: Vec::new(),
            encounters: [0; 2],
            referrals: [0; 2],
            packages: [0; 2],
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.gen_range(0..items.len())]
    }

    /// A random time on `d` between the two times of day (in minutes).
    fn at(&mut self, d: NaiveDate, from_min: i64, to_min: i64) -> NaiveDateTime {
        let m = self.rng.gen_range(from_min..to_min);
        d.and_time(NaiveTime::MIN) + minutes(m) + TimeDelta::seconds(self.rng.gen_range(0..60))
    }

    /// `t` plus a random number of minutes in the range, with seconds.
    fn later(&mut self, t: NaiveDateTime, lo: i64, hi: i64) -> NaiveDateTime {
        t + minutes(self.rng.gen_range(lo..hi)) + TimeDelta::seconds(self.rng.gen_range(0..60))
    }

    /// Working-hours time after `t` (council events).
    fn working(
        &mut self,
        t: NaiveDateTime,
        lo: i64,
        hi: i64,
        weekdays_only: bool,
    ) -> NaiveDateTime {
        let m = self.rng.gen_range(lo..hi);
        let s = self.rng.gen_range(0..60);
        add_working(t + TimeDelta::seconds(s), m, weekdays_only)
    }

    /// Records an event, unless it would be after the end of the demo.
    ///
    /// Returns whether it was recorded; stories stop at the first `false`.
    fn emit(
        &mut self,
        time: NaiveDateTime,
        source: &'static str,
        ty: &'static str,
        subject: &str,
        data: Value,
    ) -> bool {
        if time > self.end {
            return false;
        }
        self.raw.push(Raw {
            time,
            source,
            ty,
            subject: subject.to_string(),
            data,
        });
        true
    }

    fn people(&mut self, n: usize) -> Vec<Person> {
        let mut nine = 999_000_000u64;
        let mut mrns = [100_000u32; 2];
        (0..n)
            .map(|_| {
                let nhs = loop {
                    nine += self.rng.gen_range(1..=9);
                    if let Some(c) = nhs_check_digit(nine) {
                        break format!("{}", nine * 10 + c);
                    }
                };
                let hospital = usize::from(self.chance(0.5));
                let home = HOSPITALS[hospital].home_council;
                let council = if self.chance(0.85) { home } else { 1 - home };
                let age: i64 = match self.rng.gen_range(0..100) {
                    0..=4 => self.rng.gen_range(22..45),
                    5..=14 => self.rng.gen_range(45..65),
                    _ => self.rng.gen_range(65..96),
                };
                let birth_date =
                    self.today - days(age * 365 + age / 4 + self.rng.gen_range(0..365));
                let c = &COUNCILS[council];
                let letters = b"ABDEFGHJLNPQRSTUWXYZ";
                let postcode = format!(
                    "{}{} {}{}{}",
                    c.postcode_area,
                    self.rng.gen_range(1..=c.postcode_districts),
                    self.rng.gen_range(1..10),
                    char::from(self.pick(letters)),
                    char::from(self.pick(letters)),
                );
                let gp = format!("{}{:03}", c.gp_prefix, self.rng.gen_range(1..90));
                mrns[hospital] += self.rng.gen_range(1..40);
                let mrn = format!("{}-{}", HOSPITALS[hospital].ods, mrns[hospital]);
                Person {
                    nhs,
                    hospital,
                    council,
                    given: self.pick(GIVEN_NAMES),
                    family: self.pick(FAMILY_NAMES),
                    birth_date,
                    postcode,
                    gp,
                    mrn,
                }
            })
            .collect()
    }

    /// A plausible emergency admission time of day on `d`.
    fn admission_time(&mut self, d: NaiveDate, elective: bool) -> NaiveDateTime {
        if elective {
            return self.at(d, 7 * 60, 11 * 60);
        }
        const WEIGHTS: [u32; 24] = [
            2, 1, 1, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 9, 9, 9, 9, 8, 8, 7, 6, 5, 4, 3,
        ];
        let total: u32 = WEIGHTS.iter().sum();
        let mut r = self.rng.gen_range(0..total);
        let mut hour = 0;
        for (h, w) in WEIGHTS.iter().enumerate() {
            if r < *w {
                hour = h as i64;
                break;
            }
            r -= w;
        }
        self.at(d, hour * 60, hour * 60 + 60)
    }

    /// An admission time in the week (or before it), not too close to the end.
    fn admission_in(&mut self, first_day: i64, last_day: i64, elective: bool) -> NaiveDateTime {
        loop {
            let d = self.week_start.date() + days(self.rng.gen_range(first_day..=last_day));
            let t = self.admission_time(d, elective);
            if t < self.end - minutes(60) {
                return t;
            }
        }
    }

    fn plans(&mut self, people: &[Person]) -> Vec<Vec<StayPlan>> {
        let n = people.len();
        let (p3, p2) = (5, 13);
        let p1 = n * 45 / 100;
        let mut pathways: Vec<u8> = std::iter::repeat_n(3, p3)
            .chain(std::iter::repeat_n(2, p2))
            .chain(std::iter::repeat_n(1, p1))
            .chain(std::iter::repeat_n(0, n.saturating_sub(p3 + p2 + p1)))
            .take(n)
            .collect();
        pathways.shuffle(&mut self.rng);
        pathways
            .into_iter()
            .map(|pathway| {
                let two_stays = pathway <= 1 && self.chance(0.05);
                let pre_week = !two_stays && self.chance(if pathway == 0 { 0.07 } else { 0.25 });
                let elective = self.chance(0.08);
                let admitted_at = if two_stays && pathway == 1 {
                    self.admission_in(-9, -4, elective)
                } else if two_stays {
                    self.admission_in(-3, 1, elective)
                } else if pre_week {
                    self.admission_in(-9, -1, false)
                } else if pathway >= 2 {
                    self.admission_in(0, 2, elective)
                } else {
                    self.admission_in(0, 6, elective)
                };
                let stuck = (pathway > 0 && !two_stays && self.chance(0.30)).then(|| {
                    match self.rng.gen_range(0..100) {
                        0..=9 => Stuck::NotAccepted,
                        10..=34 => Stuck::AwaitingAssessment,
                        35..=74 => Stuck::NotSourced,
                        _ => Stuck::StartInFuture,
                    }
                });
                let long_wait = pathway == 0 && !two_stays && self.chance(0.03);
                let mut stays = vec![StayPlan {
                    admitted_at,
                    pathway,
                    stuck,
                    long_wait,
                    identify: true,
                    readmitted: two_stays,
                }];
                if two_stays {
                    // The readmission time is filled in once the first
                    // discharge is known; a placeholder marks the wish.
                    stays.push(StayPlan {
                        admitted_at: NaiveDateTime::MIN,
                        pathway: 0,
                        stuck: None,
                        long_wait: false,
                        identify: false,
                        readmitted: false,
                    });
                }
                stays
            })
            .collect()
    }

    fn person(&mut self, p: &Person, plans: Vec<StayPlan>) {
        let mut previous: Option<StayOutcome> = None;
        for mut plan in plans {
            if let Some(prev) = &previous {
                let Some(out) = prev.discharged_at else {
                    return;
                };
                let d = out.date() + days(self.rng.gen_range(1..=2));
                plan.admitted_at = self.admission_time(d, false);
                if plan.admitted_at > self.end - minutes(60) {
                    return;
                }
                plan.pathway = if prev.package.is_some() || self.chance(0.6) {
                    0
                } else {
                    1
                };
            }
            let outcome = self.stay(p, &plan, previous.as_ref().and_then(|o| o.package.clone()));
            previous = Some(outcome);
        }
    }

    /// One hospital stay, from admission to discharge or to `today`.
    fn stay(
        &mut self,
        p: &Person,
        plan: &StayPlan,
        suspended: Option<(usize, String)>,
    ) -> StayOutcome {
        let none = StayOutcome {
            discharged_at: None,
            package: None,
        };
        let h = &HOSPITALS[p.hospital];
        let c = &COUNCILS[p.council];
        let subject = p.nhs.as_str();
        self.encounters[p.hospital] += 1;
        let enc = format!("{}-ENC-{:06}", h.ods, self.encounters[p.hospital]);
        let admitted_at = plan.admitted_at;

        if plan.identify {
            let data = json!({
                "nhs_number_status": "01",
                "local_ids": [{"system": h.mrn_system, "value": p.mrn}],
                "given_name": p.given,
                "family_name": p.family,
                "birth_date": p.birth_date.to_string(),
                "postcode": p.postcode,
                "gp_practice": p.gp,
            });
            if !self.emit(
                admitted_at,
                h.source,
                "handover.person.identified.v1",
                subject,
                data,
            ) {
                return none;
            }
        }
        let method = match self.rng.gen_range(0..100) {
            0..=84 => "emergency",
            85..=92 => "elective",
            93..=97 => "transfer",
            _ => "other",
        };
        let first_ward = if method == "emergency" && self.chance(0.65) {
            "AMU"
        } else {
            self.pick(h.wards)
        };
        let admitted_ev = self.later(admitted_at, 2, 15);
        let data = json!({
            "encounter_id": enc,
            "site": h.site,
            "admitted_at": ts(admitted_at),
            "ward": first_ward,
            "admission_method": method,
            "responsible_council": c.gss,
        });
        if !self.emit(
            admitted_ev,
            h.source,
            "handover.discharge.admitted.v1",
            subject,
            data,
        ) {
            return none;
        }

        // Readmission of someone with care at home: brokerage suspends it.
        if let Some((ci, pkg)) = &suspended {
            let t = self.working(admitted_ev, 30, 300, true);
            let data = json!({"package_id": pkg, "reason": "Admitted to hospital"});
            self.emit(
                t,
                COUNCILS[*ci].brokerage,
                "handover.care-package.suspended.v1",
                subject,
                data,
            );
        }

        // A small number die before they are ready for discharge.
        if plan.identify && plan.pathway == 0 && !plan.long_wait && self.chance(0.015) {
            let died = self.later(admitted_ev, 12 * 60, 5 * 24 * 60);
            let data = json!({
                "encounter_id": enc,
                "discharged_at": ts(died),
                "method": 4,
                "destination": "died",
            });
            let ok = self.emit(
                died,
                h.source,
                "handover.discharge.discharged.v1",
                subject,
                data,
            );
            return StayOutcome {
                discharged_at: ok.then_some(died),
                package: None,
            };
        }

        let admit_day = admitted_at.date();
        // Discharge ready date: mostly 1-6 days after admission.
        let mut drd_offset = match self.rng.gen_range(0..100) {
            0..=24 => 1,
            25..=49 => 2,
            50..=67 => 3,
            68..=79 => 4,
            80..=87 => 5,
            88..=92 => 6,
            _ => self.rng.gen_range(7..=12),
        };
        if plan.pathway >= 2 {
            // Bed-based pathways: a little longer, but ready within the week.
            drd_offset = drd_offset.min(4) + self.rng.gen_range(0..=1);
        }
        let mut drd = admit_day + days(drd_offset);
        // Pathway 0 people admitted before the week are the medically
        // unwell long stays, so they are not ready until the week.
        if plan.pathway == 0 && admitted_at < self.week_start && drd < self.week_start.date() {
            drd = self.week_start.date() + days(self.rng.gen_range(0..3));
        }

        // DRD recorded on the day (computed first so earlier events fit).
        let drd_time = self
            .at(drd, 8 * 60, 19 * 60)
            .max(self.later(admitted_ev, 60, 180));

        // Expected date of discharge, set on the first day.
        if self.chance(0.9) {
            let t = self
                .later(admitted_ev, 180, 20 * 60)
                .min(drd_time - minutes(5));
            let slack = if plan.pathway == 0 {
                self.rng.gen_range(-1..=1)
            } else {
                self.rng.gen_range(0..=3)
            };
            let edd = (drd + days(slack)).max(admit_day + days(1));
            let data = json!({"encounter_id": enc, "expected_discharge_date": edd.to_string()});
            self.emit(
                t,
                h.source,
                "handover.discharge.expected-date-set.v1",
                subject,
                data,
            );
        }

        // DRD recorded on the day; pathway agreed at the board round on the
        // day or up to two days before (discharge to assess planning).
        let drd_data = json!({"encounter_id": enc, "discharge_ready_date": drd.to_string()});
        let drd_recorded = self.emit(
            drd_time,
            h.source,
            "handover.discharge.ready-date-recorded.v1",
            subject,
            drd_data,
        );
        let lead = if plan.pathway == 0 {
            0
        } else {
            self.rng.gen_range(1..=3)
        };
        let board_day = drd - days(lead);
        let pathway_time =
            self.at(board_day, 9 * 60, 12 * 60 + 30)
                .max(self.later(admitted_ev, 360, 600));
        let data = json!({"encounter_id": enc, "pathway": plan.pathway});
        let pathway_recorded = self.emit(
            pathway_time,
            h.source,
            "handover.discharge.pathway-assigned.v1",
            subject,
            data,
        );

        // Nobody leaves before they are recorded ready with a pathway.
        let floor = drd_time.max(pathway_time);
        let mut waits: Vec<(NaiveDateTime, Wait)> = Vec::new();
        let (discharged_at, package) = if !pathway_recorded {
            (None, None)
        } else if plan.pathway == 0 {
            let out = self.pathway0(p, plan, &enc, drd_time, floor, &mut waits);
            if let (Some(t), Some((ci, pkg))) = (out, &suspended) {
                let r = self.working(t, 30, 240, true);
                let data = json!({"package_id": pkg, "reason": "Discharged home; care resumed"});
                self.emit(
                    r,
                    COUNCILS[*ci].brokerage,
                    "handover.care-package.resumed.v1",
                    subject,
                    data,
                );
            }
            (out, None)
        } else {
            self.council_flow(p, plan, &enc, drd, pathway_time, floor, &mut waits)
        };

        // Ward moves: most AMU patients go to a base ward within a day or so.
        let transfer = if first_ward == "AMU" && self.chance(0.85) {
            Some(self.later(admitted_ev, 4 * 60, 30 * 60))
        } else if self.chance(0.12) {
            Some(self.later(admitted_ev, 24 * 60, 4 * 24 * 60))
        } else {
            None
        };
        if let Some(t) = transfer {
            if discharged_at.is_none_or(|d| t < d - minutes(30)) {
                let ward = loop {
                    let w = self.pick(h.wards);
                    if w != first_ward {
                        break w;
                    }
                };
                let data = json!({
                    "encounter_id": enc,
                    "ward": ward,
                    "previous_ward": first_ward,
                    "at": ts(t),
                });
                self.emit(
                    t,
                    h.source,
                    "handover.discharge.transferred.v1",
                    subject,
                    data,
                );
            }
        }

        if drd_recorded {
            self.record_delays(
                h.source,
                subject,
                &enc,
                drd,
                plan.pathway,
                discharged_at,
                &waits,
            );
        }
        StayOutcome {
            discharged_at,
            package,
        }
    }

    /// Pathway 0: home on the DRD or soon after, or a long non-care wait.
    fn pathway0(
        &mut self,
        p: &Person,
        plan: &StayPlan,
        enc: &str,
        drd_time: NaiveDateTime,
        floor: NaiveDateTime,
        waits: &mut Vec<(NaiveDateTime, Wait)>,
    ) -> Option<NaiveDateTime> {
        let h = &HOSPITALS[p.hospital];
        let drd = drd_time.date();
        let next_day = (drd + days(1)).and_time(NaiveTime::MIN);
        if plan.long_wait {
            let w = self.pick(PATHWAY0_LONG_WAITS);
            waits.push((next_day, w));
            return None;
        }
        let late = match self.rng.gen_range(0..100) {
            0..=59 => 0,
            60..=87 => 1,
            88..=95 => 2,
            _ => self.rng.gen_range(3..=5),
        };
        if late > 0 {
            let w = self.pick(PATHWAY0_SHORT_WAITS);
            waits.push((next_day, w));
        }
        let day = drd + days(late);
        let t = self
            .at(day, 10 * 60, 20 * 60 + 30)
            .max(self.later(floor, 60, 180));
        let destination = match self.rng.gen_range(0..100) {
            0..=93 => "usual-residence",
            94..=96 => "care-home",
            97 => "hospice",
            _ => "other",
        };
        let method = if self.chance(0.02) { 2 } else { 1 };
        let data = json!({
            "encounter_id": enc,
            "discharged_at": ts(t),
            "method": method,
            "destination": destination,
            "pathway": 0,
        });
        self.emit(
            t,
            h.source,
            "handover.discharge.discharged.v1",
            &p.nhs,
            data,
        )
        .then_some(t)
    }

    /// Pathways 1-3: referral, acceptance, assessment, package, discharge.
    #[allow(clippy::too_many_arguments)]
    fn council_flow(
        &mut self,
        p: &Person,
        plan: &StayPlan,
        enc: &str,
        drd: NaiveDate,
        pathway_time: NaiveDateTime,
        floor: NaiveDateTime,
        waits: &mut Vec<(NaiveDateTime, Wait)>,
    ) -> (Option<NaiveDateTime>, Option<(usize, String)>) {
        let h = &HOSPITALS[p.hospital];
        let c = &COUNCILS[p.council];
        let subject = p.nhs.as_str();
        let pathway = plan.pathway;
        waits.push((pathway_time, W_HOSPITAL));

        // Referral, the day the pathway is agreed.
        self.referrals[p.hospital] += 1;
        let referral_id = format!("REF-{}-{:06}", h.ods, self.referrals[p.hospital]);
        let sent = self.later(pathway_time, 20, 180);
        let safeguarding = self.chance(0.05);
        let reason = self.pick(REFERRAL_REASONS[usize::from(pathway)]);
        let urgency = if self.chance(0.3) {
            "urgent"
        } else {
            "routine"
        };
        let proposed = drd.max(sent.date());
        let data = json!({
            "referral_id": referral_id,
            "to_council": c.gss,
            "from_org": h.ods,
            "encounter_id": enc,
            "reason": reason,
            "urgency": urgency,
            "proposed_discharge_date": proposed.to_string(),
            "consent_obtained": self.chance(0.95),
            "safeguarding_concern": safeguarding,
            "carer_involved": self.chance(0.4),
        });
        if !self.emit(sent, h.source, "handover.referral.sent.v1", subject, data) {
            return (None, None);
        }
        waits.push((
            sent,
            if safeguarding {
                W_SAFEGUARDING
            } else {
                W_ASSESS
            },
        ));
        if plan.stuck == Some(Stuck::NotAccepted) {
            return (None, None);
        }

        // The hospital social work team responds (seven-day service).
        let responded = self.working(sent, 45, 480, false);
        let roll = self.rng.gen_range(0..100);
        if plan.stuck.is_none() && roll < 8 {
            let (ty, source, reason) = if roll < 4 {
                (
                    "handover.referral.declined.v1",
                    c.source,
                    self.pick(DECLINE_REASONS),
                )
            } else {
                (
                    "handover.referral.withdrawn.v1",
                    h.source,
                    self.pick(WITHDRAW_REASONS),
                )
            };
            let data = json!({"referral_id": referral_id, "reason": reason});
            if !self.emit(responded, source, ty, subject, data) {
                return (None, None);
            }
            waits.push((responded, W_REPLAN));
            return (self.replan_home(p, enc, responded, floor, 0), None);
        }
        let data = json!({"referral_id": referral_id, "team": "Hospital Social Work Team"});
        if !self.emit(
            responded,
            c.source,
            "handover.referral.accepted.v1",
            subject,
            data,
        ) {
            return (None, None);
        }
        if plan.stuck == Some(Stuck::AwaitingAssessment) {
            return (None, None);
        }

        let assessed = self.working(responded, 60, 600, false);
        let assessment_type = match (pathway, self.rng.gen_range(0..100)) {
            (1, 0..=54) | (2, _) => "needs",
            (1, 55..=89) => "occupational-therapy",
            (1, _) => "carer",
            (_, 0..=69) => "needs",
            _ => "financial",
        };
        let outcome = match (plan.stuck, self.rng.gen_range(0..100)) {
            (None, 0..=2) => "not-eligible",
            (None, 3..=5) if pathway == 1 => "no-assessment-needed",
            _ => "eligible",
        };
        let data = json!({
            "referral_id": referral_id,
            "assessment_type": assessment_type,
            "outcome": outcome,
        });
        if !self.emit(
            assessed,
            c.source,
            "handover.referral.assessment-completed.v1",
            subject,
            data,
        ) {
            return (None, None);
        }
        if outcome != "eligible" {
            waits.push((assessed, W_REPLAN));
            return (self.replan_home(p, enc, assessed, floor, 0), None);
        }

        // Brokerage: weekdays only.
        let service_type = match (pathway, self.rng.gen_range(0..100)) {
            (1, 0..=59) => "reablement",
            (1, _) => "home-care",
            (2, _) => "community-bed",
            (_, 0..=59) => "residential",
            _ => "nursing",
        };
        waits.push((assessed, package_wait(service_type, false)));
        self.packages[p.council] += 1;
        let package_id = format!("PKG-{}-{:06}", c.gss, self.packages[p.council]);
        let requested = self.working(assessed, 10, 240, true);
        let required_start = drd.max(requested.date() + days(self.rng.gen_range(0..=1)));
        let mut data = json!({
            "package_id": package_id,
            "service_type": service_type,
            "referral_id": referral_id,
            "required_start": required_start.to_string(),
        });
        if matches!(service_type, "reablement" | "home-care") {
            let calls: u32 = self.pick(&[1, 2, 2, 3, 3, 4, 4]);
            let carers: u32 = if self.chance(0.2) { 2 } else { 1 };
            let call_minutes = self.pick(&[30.0, 30.0, 45.0, 60.0]);
            let hours = f64::from(calls) * 7.0 * call_minutes / 60.0;
            data["hours_per_week"] = json!(hours);
            data["calls_per_day"] = json!(calls);
            data["carers_per_call"] = json!(carers);
        }
        if !self.emit(
            requested,
            c.brokerage,
            "handover.care-package.requested.v1",
            subject,
            data,
        ) {
            return (None, None);
        }
        if plan.stuck.is_none() && pathway == 1 && self.chance(0.04) {
            let t = self.working(requested, 60, 600, true);
            let data = json!({"package_id": package_id, "reason": "Family arranging private care"});
            if !self.emit(
                t,
                c.brokerage,
                "handover.care-package.cancelled.v1",
                subject,
                data,
            ) {
                return (None, None);
            }
            waits.push((t, W_PRIVATE));
            return (self.replan_home(p, enc, t, floor, pathway), None);
        }
        if plan.stuck == Some(Stuck::NotSourced) {
            return (None, None);
        }

        let (lo, hi) = match service_type {
            "reablement" => (60, 600),
            "home-care" => (120, 1500),
            "community-bed" => (120, 900),
            "residential" => (300, 1800),
            _ => (400, 2000),
        };
        let sourced = self.working(requested, lo, hi, true);
        let agreed_start = if plan.stuck == Some(Stuck::StartInFuture) {
            (self.today + days(self.rng.gen_range(1..=4))).max(sourced.date() + days(1))
        } else {
            required_start.max(sourced.date() + days(self.rng.gen_range(0..=1)))
        };
        let provider = self.pick(PROVIDERS);
        let data = json!({
            "package_id": package_id,
            "provider": provider,
            "agreed_start": agreed_start.to_string(),
        });
        if !self.emit(
            sourced,
            c.brokerage,
            "handover.care-package.sourced.v1",
            subject,
            data,
        ) {
            return (None, None);
        }
        waits.push((sourced, package_wait(service_type, true)));

        // Discharge on the start day; the provider confirms the start.
        let out = self
            .at(agreed_start, 9 * 60, 13 * 60)
            .max(self.later(sourced, 60, 180))
            .max(self.later(floor, 30, 120));
        let destination = match service_type {
            "community-bed" => "community-bed",
            "residential" | "nursing" => "care-home",
            _ => "usual-residence",
        };
        let data = json!({
            "encounter_id": enc,
            "discharged_at": ts(out),
            "method": 1,
            "destination": destination,
            "pathway": pathway,
        });
        if !self.emit(
            out,
            h.source,
            "handover.discharge.discharged.v1",
            subject,
            data,
        ) {
            return (None, None);
        }
        let started = self.working(out, 30, 150, false);
        let data = json!({"package_id": package_id, "started_on": out.date().to_string()});
        if !self.emit(
            started,
            c.brokerage,
            "handover.care-package.started.v1",
            subject,
            data,
        ) {
            return (Some(out), None);
        }
        if service_type == "reablement" && !plan.readmitted && self.chance(0.5) {
            let after = started + days(self.rng.gen_range(3..=8));
            let ended = self.working(after, 0, 400, true);
            let data = json!({"package_id": package_id, "reason": "Reablement goals met"});
            self.emit(
                ended,
                c.brokerage,
                "handover.care-package.ended.v1",
                subject,
                data,
            );
        }
        let keep = matches!(service_type, "home-care" | "reablement");
        (Some(out), keep.then_some((p.council, package_id)))
    }

    /// After a referral falls through: new plan, then home within a day or so.
    fn replan_home(
        &mut self,
        p: &Person,
        enc: &str,
        after: NaiveDateTime,
        floor: NaiveDateTime,
        pathway: u8,
    ) -> Option<NaiveDateTime> {
        let h = &HOSPITALS[p.hospital];
        let t = self.later(after, 60, 20 * 60);
        let data = json!({"encounter_id": enc, "pathway": pathway});
        if pathway == 0
            && !self.emit(
                t,
                h.source,
                "handover.discharge.pathway-assigned.v1",
                &p.nhs,
                data,
            )
        {
            return None;
        }
        let out = self
            .at(t.date() + days(1), 10 * 60, 19 * 60)
            .max(self.later(floor, 30, 120));
        let data = json!({
            "encounter_id": enc,
            "discharged_at": ts(out),
            "method": 1,
            "destination": "usual-residence",
            "pathway": pathway,
        });
        self.emit(
            out,
            h.source,
            "handover.discharge.discharged.v1",
            &p.nhs,
            data,
        )
        .then_some(out)
    }

    /// Daily morning census from the day after the DRD: a delay-recorded
    /// event whenever the reason someone is still in hospital changes.
    #[allow(clippy::too_many_arguments)]
    fn record_delays(
        &mut self,
        source: &'static str,
        subject: &str,
        enc: &str,
        drd: NaiveDate,
        pathway: u8,
        discharged_at: Option<NaiveDateTime>,
        waits: &[(NaiveDateTime, Wait)],
    ) {
        let mut last: Option<Wait> = None;
        let mut d = drd + days(1);
        while d <= self.today {
            let t = self.at(d, 7 * 60 + 30, 10 * 60);
            if t > self.end || discharged_at.is_some_and(|out| out <= t) {
                break;
            }
            let default = if pathway == 0 {
                PATHWAY0_SHORT_WAITS[3]
            } else {
                W_HOSPITAL
            };
            let w = waits
                .iter()
                .rev()
                .find(|(from, _)| *from <= t)
                .map_or(default, |(_, w)| *w);
            if last != Some(w) {
                let data = json!({
                    "encounter_id": enc,
                    "reason": w.reason,
                    "attributed_to": w.attributed_to,
                    "note": w.note,
                });
                self.emit(
                    t,
                    source,
                    "handover.discharge.delay-recorded.v1",
                    subject,
                    data,
                );
                last = Some(w);
            }
            d += days(1);
        }
    }

    /// Sorts by time and gives each event its envelope and id.
    fn finish(mut self, seed: u64) -> Vec<Value> {
        // Stable sort: ties keep generation order, which is deterministic.
        self.raw.sort_by_key(|r| r.time);
        let mut counters: Vec<(&'static str, u32)> = Vec::new();
        self.raw
            .into_iter()
            .map(|r| {
                let n = match counters.iter_mut().find(|(s, _)| *s == r.source) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        counters.push((r.source, 1));
                        1
                    }
                };
                json!({
                    "specversion": "1.0",
                    "id": format!("demo-{seed}-{n:06}"),
                    "source": r.source,
                    "type": r.ty,
                    "subject": r.subject,
                    "time": ts(r.time),
                    "datacontenttype": "application/json",
                    "data": r.data,
                })
            })
            .collect()
    }
}

/// A deterministic synthetic week of care events for the demo.
///
/// About [`DEMO_PEOPLE`] people across two hospital sites (RX1, RR8) and two
/// councils (Leeds E08000035, Bradford E08000032), for the seven days up to
/// and including `today` (nothing after `today` 17:00 UTC). People admitted
/// before the week come with their earlier events. Returns CloudEvents 1.0
/// JSON values sorted by `time`; ids are `demo-<seed>-<counter>`, unique per
/// source. The same `seed` and `today` always give the same events.
pub fn demo_week(seed: u64, today: NaiveDate) -> Vec<Value> {
    let mut g = Gen::new(seed, today);
    let people = g.people(DEMO_PEOPLE);
    let plans = g.plans(&people);
    for (p, stays) in people.iter().zip(plans) {
        g.person(p, stays);
    }
    g.finish(seed)
}

/// People discharged into reablement about three months before `today`, so that the 91-day
/// outcome (reported when day 91 is reached) has a cohort in the default 28-day period: most
/// stay at home, some are readmitted, a few move into a care home. Their NHS numbers do not
/// overlap [`demo_week`]'s.
pub fn demo_history(seed: u64, today: NaiveDate) -> Vec<Value> {
    const PEOPLE: u64 = 60;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x91);
    let mut out = Vec::new();
    let mut n = 0u64;
    let mut base = 999_100_000u64;
    let given = [
        "Margaret", "Arthur", "Joan", "Dennis", "Irene", "Kenneth", "Doreen", "Roy",
    ];
    let family = [
        "Hartley",
        "Pickering",
        "Ackroyd",
        "Sutcliffe",
        "Holroyd",
        "Barraclough",
    ];
    for k in 0..PEOPLE {
        let nhs = loop {
            base += 1;
            if let Some(c) = nhs_check_digit(base) {
                break format!("{base}{c}");
            }
        };
        let (hospital, site, council, gss) = if k % 2 == 0 {
            (
                "urn:ods:RX1:pas",
                "RX1CC",
                "urn:gss:E08000035:brokerage",
                "E08000035",
            )
        } else {
            (
                "urn:ods:RR8:epr",
                "RR801",
                "urn:gss:E08000032:brokerage",
                "E08000032",
            )
        };
        let discharged = today - TimeDelta::days(91 + (k % 27) as i64);
        let at = |d: NaiveDate, h: u32| ts(d.and_time(hm(h, 0)));
        let date = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        let enc = format!("HIST-ENC-{k:04}");
        let pkg = format!("HIST-PKG-{k:04}");
        let mut ev = |source: &str, ty: &str, time: String, data: Value| {
            n += 1;
            out.push(
                json!({"specversion": "1.0", "id": format!("hist-{seed}-{n:05}"), "source": source,
                "type": format!("handover.{ty}.v1"), "subject": nhs, "time": time,
                "datacontenttype": "application/json", "data": data}),
            );
        };
        let admitted = discharged - TimeDelta::days(rng.gen_range(4..12));
        ev(
            hospital,
            "person.identified",
            at(admitted, 9),
            json!({"nhs_number_status": "01",
            "local_ids": [{"system": format!("https://{}.nhs.uk/id/mrn", &site[..3].to_lowercase()), "value": format!("{}-2{k:05}", &site[..3])}],
            "given_name": given[(k as usize) % given.len()], "family_name": family[(k as usize / 3) % family.len()],
            "birth_date": format!("19{}-0{}-1{}", 30 + k % 20, 1 + k % 9, k % 9)}),
        );
        ev(
            hospital,
            "discharge.admitted",
            at(admitted, 9),
            json!({"encounter_id": enc, "site": site, "ward": "Elderly Care 3",
            "admitted_at": at(admitted, 9), "admission_method": "emergency", "responsible_council": gss}),
        );
        ev(
            hospital,
            "discharge.ready-date-recorded",
            at(discharged - TimeDelta::days(2), 10),
            json!({"encounter_id": enc, "discharge_ready_date": date(discharged - TimeDelta::days(2))}),
        );
        ev(
            hospital,
            "discharge.pathway-assigned",
            at(discharged - TimeDelta::days(2), 11),
            json!({"encounter_id": enc, "pathway": 1}),
        );
        ev(
            council,
            "care-package.requested",
            at(discharged - TimeDelta::days(1), 10),
            json!({"package_id": pkg, "service_type": "reablement", "hours_per_week": 7, "calls_per_day": 2, "carers_per_call": 1,
                   "required_start": date(discharged)}),
        );
        ev(
            council,
            "care-package.sourced",
            at(discharged - TimeDelta::days(1), 15),
            json!({"package_id": pkg, "provider": "Leeds Reablement Service", "agreed_start": date(discharged)}),
        );
        ev(
            hospital,
            "discharge.discharged",
            at(discharged, 12),
            json!({"encounter_id": enc, "discharged_at": at(discharged, 12),
            "method": 1, "destination": "usual-residence", "pathway": 1}),
        );
        ev(
            council,
            "care-package.started",
            at(discharged, 16),
            json!({"package_id": pkg, "started_on": date(discharged)}),
        );
        ev(
            council,
            "care-package.ended",
            at(discharged + TimeDelta::days(42), 10),
            json!({"package_id": pkg, "reason": "reablement completed"}),
        );
        match k % 10 {
            // readmitted within 91 days, and home again a week later
            3 | 7 => {
                let back = discharged + TimeDelta::days(20 + (k % 40) as i64);
                let enc2 = format!("HIST-ENC-{k:04}-2");
                ev(
                    hospital,
                    "discharge.admitted",
                    at(back, 8),
                    json!({"encounter_id": enc2, "site": site, "ward": "AMU",
                    "admitted_at": at(back, 8), "admission_method": "emergency", "responsible_council": gss}),
                );
                ev(
                    hospital,
                    "discharge.discharged",
                    at(back + TimeDelta::days(6), 12),
                    json!({"encounter_id": enc2,
                    "discharged_at": at(back + TimeDelta::days(6), 12), "method": 1, "destination": "usual-residence", "pathway": 0}),
                );
            }
            // moved into a care home
            5 => {
                let home = format!("HIST-PKG-{k:04}-R");
                let on = discharged + TimeDelta::days(60);
                ev(
                    council,
                    "care-package.requested",
                    at(on - TimeDelta::days(7), 10),
                    json!({"package_id": home, "service_type": "residential"}),
                );
                ev(
                    council,
                    "care-package.started",
                    at(on, 10),
                    json!({"package_id": home, "started_on": date(on)}),
                );
            }
            _ => {}
        }
    }
    out.sort_by(|a, b| a["time"].as_str().cmp(&b["time"].as_str()));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap, HashSet};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 19).unwrap()
    }

    fn week() -> Vec<Value> {
        demo_week(42, today())
    }

    /// Whether `s` is a 10-digit NHS number with a valid Modulus 11 check digit.
    fn nhs_check_digit_valid(s: &str) -> bool {
        if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
        let sum: u32 = d[..9].iter().zip((2..=10).rev()).map(|(x, w)| x * w).sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return false,
            c => c,
        };
        check == d[9]
    }

    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v[k].as_str()
            .unwrap_or_else(|| panic!("{k} not a string in {v}"))
    }

    fn is_date(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok())
    }

    fn is_time(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok())
    }

    fn one_of(options: &'static [&'static str]) -> impl Fn(&Value) -> bool {
        move |v| v.as_str().is_some_and(|s| options.contains(&s))
    }

    fn string(v: &Value) -> bool {
        v.as_str().is_some_and(|s| !s.is_empty())
    }

    type Check = Box<dyn Fn(&Value) -> bool>;

    /// Required data fields per type, with a check of each value.
    fn contract() -> HashMap<&'static str, Vec<(&'static str, Check)>> {
        let reasons: &'static [&'static str] = &[
            "awaiting-assessment",
            "awaiting-care-package",
            "awaiting-reablement",
            "awaiting-residential-bed",
            "awaiting-nursing-bed",
            "awaiting-community-rehab-bed",
            "awaiting-equipment",
            "awaiting-transport",
            "awaiting-medicines",
            "awaiting-discharge-summary",
            "hospital-process",
            "patient-family-choice",
            "housing",
            "safeguarding",
            "other",
        ];
        let mut m: HashMap<&'static str, Vec<(&'static str, Check)>> = HashMap::new();
        let enc = || -> (&'static str, Check) { ("encounter_id", Box::new(string)) };
        let refid = || -> (&'static str, Check) { ("referral_id", Box::new(string)) };
        let pkg = || -> (&'static str, Check) { ("package_id", Box::new(string)) };
        m.insert(
            "handover.person.identified.v1",
            vec![
                ("nhs_number_status", Box::new(one_of(&["01"]))),
                (
                    "local_ids",
                    Box::new(|v: &Value| v.as_array().is_some_and(|a| !a.is_empty())),
                ),
            ],
        );
        m.insert(
            "handover.discharge.admitted.v1",
            vec![
                enc(),
                ("site", Box::new(one_of(&["RX1CC", "RR801"]))),
                ("admitted_at", Box::new(is_time)),
            ],
        );
        m.insert(
            "handover.discharge.transferred.v1",
            vec![enc(), ("ward", Box::new(string))],
        );
        m.insert(
            "handover.discharge.ready-date-recorded.v1",
            vec![enc(), ("discharge_ready_date", Box::new(is_date))],
        );
        m.insert(
            "handover.discharge.pathway-assigned.v1",
            vec![
                enc(),
                (
                    "pathway",
                    Box::new(|v: &Value| v.as_u64().is_some_and(|p| p <= 3)),
                ),
            ],
        );
        m.insert(
            "handover.discharge.expected-date-set.v1",
            vec![enc(), ("expected_discharge_date", Box::new(is_date))],
        );
        m.insert(
            "handover.discharge.delay-recorded.v1",
            vec![
                enc(),
                ("reason", Box::new(one_of(reasons))),
                (
                    "attributed_to",
                    Box::new(one_of(&["nhs", "council", "joint"])),
                ),
            ],
        );
        m.insert(
            "handover.discharge.discharged.v1",
            vec![enc(), ("discharged_at", Box::new(is_time))],
        );
        m.insert(
            "handover.referral.sent.v1",
            vec![
                refid(),
                ("to_council", Box::new(one_of(&["E08000035", "E08000032"]))),
                ("from_org", Box::new(one_of(&["RX1", "RR8"]))),
            ],
        );
        m.insert("handover.referral.accepted.v1", vec![refid()]);
        m.insert(
            "handover.referral.declined.v1",
            vec![refid(), ("reason", Box::new(string))],
        );
        m.insert(
            "handover.referral.withdrawn.v1",
            vec![refid(), ("reason", Box::new(string))],
        );
        m.insert(
            "handover.referral.assessment-completed.v1",
            vec![
                refid(),
                (
                    "assessment_type",
                    Box::new(one_of(&[
                        "needs",
                        "carer",
                        "occupational-therapy",
                        "financial",
                    ])),
                ),
                (
                    "outcome",
                    Box::new(one_of(&[
                        "eligible",
                        "not-eligible",
                        "no-assessment-needed",
                    ])),
                ),
            ],
        );
        m.insert(
            "handover.care-package.requested.v1",
            vec![
                pkg(),
                (
                    "service_type",
                    Box::new(one_of(&[
                        "home-care",
                        "reablement",
                        "residential",
                        "nursing",
                        "community-bed",
                        "equipment",
                        "other",
                    ])),
                ),
            ],
        );
        m.insert(
            "handover.care-package.sourced.v1",
            vec![pkg(), ("provider", Box::new(string))],
        );
        m.insert(
            "handover.care-package.started.v1",
            vec![pkg(), ("started_on", Box::new(is_date))],
        );
        for ty in ["suspended", "resumed", "ended", "cancelled"] {
            let name: &'static str = match ty {
                "suspended" => "handover.care-package.suspended.v1",
                "resumed" => "handover.care-package.resumed.v1",
                "ended" => "handover.care-package.ended.v1",
                _ => "handover.care-package.cancelled.v1",
            };
            m.insert(name, vec![pkg()]);
        }
        m
    }

    /// Optional fields, when present, have the contract's shapes.
    fn optional_ok(ty: &str, d: &Value) -> bool {
        let opt = |k: &str, f: &dyn Fn(&Value) -> bool| d.get(k).is_none_or(f);
        match ty {
            "handover.discharge.admitted.v1" => {
                opt(
                    "admission_method",
                    &one_of(&["emergency", "elective", "transfer", "other"]),
                ) && opt("responsible_council", &one_of(&["E08000035", "E08000032"]))
            }
            "handover.discharge.discharged.v1" => {
                opt("method", &|v| {
                    v.as_u64().is_some_and(|m| (1..=5).contains(&m))
                }) && opt(
                    "destination",
                    &one_of(&[
                        "usual-residence",
                        "care-home",
                        "community-bed",
                        "hospice",
                        "died",
                        "other",
                    ]),
                ) && opt("pathway", &|v| v.as_u64().is_some_and(|p| p <= 3))
            }
            "handover.referral.sent.v1" => {
                opt("urgency", &one_of(&["routine", "urgent"]))
                    && opt("proposed_discharge_date", &is_date)
                    && ["consent_obtained", "safeguarding_concern", "carer_involved"]
                        .iter()
                        .all(|k| opt(k, &|v| v.is_boolean()))
            }
            "handover.care-package.requested.v1" => {
                opt("hours_per_week", &|v| v.is_number())
                    && opt("calls_per_day", &|v| v.is_u64())
                    && opt("carers_per_call", &|v| {
                        v.as_u64().is_some_and(|c| (1..=2).contains(&c))
                    })
                    && opt("required_start", &is_date)
            }
            "handover.care-package.sourced.v1" => opt("agreed_start", &is_date),
            "handover.person.identified.v1" => opt("birth_date", &is_date),
            _ => true,
        }
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(week(), week());
        assert_ne!(demo_week(1, today()), demo_week(2, today()));
    }

    #[test]
    fn size_is_realistic() {
        let events = week();
        assert!(
            (2000..=4000).contains(&events.len()),
            "{} events",
            events.len()
        );
        let people: HashSet<&str> = events.iter().map(|e| s(e, "subject")).collect();
        assert!(
            (250..=DEMO_PEOPLE).contains(&people.len()),
            "{} people",
            people.len()
        );
    }

    #[test]
    fn nhs_numbers_are_valid_and_synthetic() {
        for e in week() {
            let n = s(&e, "subject");
            assert!(n.starts_with("999"), "{n}");
            assert!(nhs_check_digit_valid(n), "{n}");
        }
        assert!(nhs_check_digit_valid("9434765919"));
        assert!(!nhs_check_digit_valid("9434765918"));
    }

    #[test]
    fn ids_unique_per_source() {
        let events = week();
        let ids: HashSet<(&str, &str)> = events
            .iter()
            .map(|e| (s(e, "source"), s(e, "id")))
            .collect();
        assert_eq!(ids.len(), events.len());
    }

    #[test]
    fn sorted_and_not_after_today() {
        let events = week();
        let times: Vec<&str> = events.iter().map(|e| s(e, "time")).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let last = times.last().unwrap();
        assert!(*last <= "2026-11-19T17:00:00Z", "{last}");
        // Most events fall in the week itself.
        let in_week = times.iter().filter(|t| **t >= "2026-11-13").count();
        assert!(
            in_week * 4 >= events.len() * 3,
            "{in_week} of {}",
            events.len()
        );
    }

    #[test]
    fn envelope_and_required_fields() {
        let contract = contract();
        let sources = [
            "urn:ods:RX1:pas",
            "urn:ods:RR8:epr",
            "urn:gss:E08000035:mosaic",
            "urn:gss:E08000032:liquidlogic",
            "urn:gss:E08000035:brokerage",
            "urn:gss:E08000032:brokerage",
        ];
        let mut seen = HashSet::new();
        for e in week() {
            assert_eq!(e["specversion"], "1.0");
            assert_eq!(e["datacontenttype"], "application/json");
            assert!(sources.contains(&s(&e, "source")), "{e}");
            assert!(is_time(&e["time"]), "{e}");
            let ty = s(&e, "type");
            let fields = contract
                .get(ty)
                .unwrap_or_else(|| panic!("unknown type {ty}"));
            let data = &e["data"];
            for (k, ok) in fields {
                assert!(ok(&data[*k]), "{ty}: bad or missing {k} in {data}");
            }
            assert!(optional_ok(ty, data), "{ty}: bad optional field in {data}");
            seen.insert(ty.to_string());
        }
        for ty in contract.keys() {
            assert!(seen.contains(*ty), "no {ty} event in the demo");
        }
    }

    #[test]
    fn council_events_in_working_hours_and_hospital_sources_right() {
        for e in week() {
            let src = s(&e, "source");
            let ty = s(&e, "type");
            if src.starts_with("urn:gss:") {
                let t = &s(&e, "time")[11..16];
                assert!(("08:30".."17:00").contains(&t), "{e}");
            }
            if ty.starts_with("handover.care-package.") {
                assert!(src.ends_with(":brokerage"), "{e}");
            }
            if ty.starts_with("handover.discharge.") || ty == "handover.referral.sent.v1" {
                assert!(src.starts_with("urn:ods:"), "{e}");
            }
        }
    }

    /// Per-encounter and per-referral stories are in causal order.
    #[test]
    fn stories_in_order() {
        let events = week();
        let mut admitted: HashMap<String, String> = HashMap::new();
        let mut discharged: HashMap<String, String> = HashMap::new();
        let mut referral_sent: HashMap<String, String> = HashMap::new();
        let mut package_steps: HashMap<String, Vec<&str>> = HashMap::new();
        for e in &events {
            let d = &e["data"];
            let time = s(e, "time").to_string();
            let ty = s(e, "type");
            if let Some(enc) = d["encounter_id"].as_str() {
                if ty == "handover.discharge.admitted.v1" {
                    assert!(
                        admitted.insert(enc.into(), time.clone()).is_none(),
                        "{enc} admitted twice"
                    );
                } else if ty != "handover.referral.sent.v1" {
                    assert!(admitted.contains_key(enc), "{ty} before admission of {enc}");
                    assert!(
                        !discharged.contains_key(enc),
                        "{ty} after discharge of {enc}"
                    );
                }
                if ty == "handover.discharge.discharged.v1" {
                    discharged.insert(enc.into(), time.clone());
                }
            }
            if let Some(r) = d["referral_id"].as_str() {
                if ty == "handover.referral.sent.v1" {
                    referral_sent.insert(r.into(), time.clone());
                } else {
                    assert!(referral_sent.contains_key(r), "{ty} before referral {r}");
                }
            }
            if let Some(p) = d["package_id"].as_str() {
                let step = ty
                    .trim_start_matches("handover.care-package.")
                    .trim_end_matches(".v1");
                package_steps.entry(p.into()).or_default().push(step);
            }
        }
        for (p, steps) in package_steps {
            let order = [
                "requested",
                "sourced",
                "started",
                "suspended",
                "resumed",
                "ended",
            ];
            assert_eq!(steps[0], "requested", "{p}: {steps:?}");
            let pos: Vec<usize> = steps
                .iter()
                .filter(|s| **s != "cancelled")
                .map(|s| order.iter().position(|o| o == s).unwrap())
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "{p}: {steps:?}");
        }
    }

    struct Summary {
        people: usize,
        pathways: BTreeMap<u64, usize>,
        in_past_drd: usize,
        still_in: usize,
    }

    fn summarise(events: &[Value]) -> Summary {
        let mut pathways: HashMap<&str, u64> = HashMap::new();
        let mut drd: HashMap<&str, &str> = HashMap::new();
        let mut admitted: HashSet<&str> = HashSet::new();
        let mut out: HashSet<&str> = HashSet::new();
        for e in events {
            let d = &e["data"];
            let enc = d["encounter_id"].as_str().unwrap_or_default();
            match s(e, "type") {
                "handover.discharge.admitted.v1" => {
                    admitted.insert(enc);
                }
                "handover.discharge.pathway-assigned.v1" => {
                    // The first pathway agreed is the one counted.
                    pathways
                        .entry(enc)
                        .or_insert(d["pathway"].as_u64().unwrap());
                }
                "handover.discharge.ready-date-recorded.v1" => {
                    drd.insert(enc, s(d, "discharge_ready_date"));
                }
                "handover.discharge.discharged.v1" => {
                    out.insert(enc);
                }
                _ => {}
            }
        }
        let mut counts = BTreeMap::new();
        for p in pathways.values() {
            *counts.entry(*p).or_insert(0) += 1;
        }
        let still: Vec<&&str> = admitted.iter().filter(|e| !out.contains(**e)).collect();
        let past = still
            .iter()
            .filter(|e| drd.get(**e).is_some_and(|d| *d < "2026-11-19"))
            .count();
        Summary {
            people: events
                .iter()
                .map(|e| s(e, "subject"))
                .collect::<HashSet<_>>()
                .len(),
            pathways: counts,
            in_past_drd: past,
            still_in: still.len(),
        }
    }

    #[test]
    fn every_pathway_present_and_many_delayed() {
        for seed in [42, 7, 2026] {
            let events = demo_week(seed, today());
            let sum = summarise(&events);
            for p in 0..=3 {
                let n = sum.pathways.get(&p).copied().unwrap_or(0);
                assert!(n >= 3, "seed {seed}: pathway {p} only {n} times");
            }
            assert!(
                sum.in_past_drd >= 30,
                "seed {seed}: only {} past DRD",
                sum.in_past_drd
            );
            assert!(
                sum.in_past_drd <= 70,
                "seed {seed}: {} past DRD",
                sum.in_past_drd
            );
            assert!(sum.people > 0 && sum.still_in >= sum.in_past_drd);
        }
    }

    #[test]
    fn print_summary() {
        let events = week();
        let sum = summarise(&events);
        let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &events {
            *by_type.entry(s(e, "type")).or_insert(0) += 1;
        }
        println!(
            "events {} people {} still in {} past DRD {} pathways {:?}",
            events.len(),
            sum.people,
            sum.still_in,
            sum.in_past_drd,
            sum.pathways
        );
        for (t, n) in by_type {
            println!("  {t}: {n}");
        }
        // Pathway 1-3 encounters still in hospital at the end.
        let mut first_pathway: HashMap<&str, u64> = HashMap::new();
        let mut out: HashSet<&str> = HashSet::new();
        for e in &events {
            let d = &e["data"];
            match s(e, "type") {
                "handover.discharge.pathway-assigned.v1" => {
                    first_pathway
                        .entry(s(d, "encounter_id"))
                        .or_insert(d["pathway"].as_u64().unwrap());
                }
                "handover.discharge.discharged.v1" => {
                    out.insert(s(d, "encounter_id"));
                }
                _ => {}
            }
        }
        let p123: Vec<&&str> = first_pathway
            .iter()
            .filter(|(_, p)| **p > 0)
            .map(|(e, _)| e)
            .collect();
        let waiting = p123.iter().filter(|e| !out.contains(**e)).count();
        println!(
            "pathway 1-3 encounters {} still waiting {waiting}",
            p123.len()
        );
    }

    #[test]
    fn working_time_arithmetic() {
        let fri = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let t = fri.and_time(hm(16, 50));
        assert_eq!(
            add_working(t, 20, true),
            NaiveDate::from_ymd_opt(2026, 11, 23)
                .unwrap()
                .and_time(hm(8, 40))
        );
        assert_eq!(
            add_working(t, 20, false),
            NaiveDate::from_ymd_opt(2026, 11, 21)
                .unwrap()
                .and_time(hm(8, 40))
        );
        assert_eq!(
            add_working(fri.and_time(hm(3, 0)), 0, true),
            fri.and_time(hm(8, 30))
        );
    }

    #[test]
    fn history_is_valid_and_gives_the_91_day_outcome_a_cohort() {
        let h = demo_history(42, today());
        let week_people: HashSet<String> =
            week().iter().map(|e| s(e, "subject").to_string()).collect();
        for e in &h {
            handover_events::Event::from_json(e.clone()).unwrap();
            assert!(nhs_check_digit_valid(s(e, "subject")));
            assert!(
                !week_people.contains(s(e, "subject")),
                "history people are not in the week"
            );
            assert!(s(e, "time") < "2026-11-19", "{}", s(e, "time"));
        }
        let discharges = h
            .iter()
            .filter(|e| s(e, "type") == "handover.discharge.discharged.v1")
            .count();
        assert_eq!(discharges, 60 + 12);
    }
}
