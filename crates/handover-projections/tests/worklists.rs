//! Worklist rows and measures from scripted event sequences, numbers asserted.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use handover_events::Event;
use handover_projections::journey::{Journey, PackageStatus, ReferralStatus};
use handover_projections::measures::{flow, MeasureFilter};
use handover_projections::rows::{brokerage_rows, delay_row, person_facts};
use serde_json::{json, Value};

const NHS: &str = "9434765919";

fn ev(n: usize, ty: &str, time: &str, data: Value) -> Event {
    let source = if ty.starts_with("referral.accepted")
        || ty.starts_with("referral.assessment")
        || ty.starts_with("care-package")
    {
        "urn:gss:E08000035:mosaic"
    } else {
        "urn:ods:RX1:pas"
    };
    Event::from_json(json!({"specversion":"1.0","id":format!("e{n}"),"source":source,"type":format!("handover.{ty}.v1"),
        "subject":NHS,"time":time,"data":data}))
    .unwrap()
}

fn journey(events: &[Event]) -> Journey {
    let mut j = Journey::default();
    for (i, e) in events.iter().enumerate() {
        j.apply(i as u64 + 1, e);
    }
    j
}

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn period(from: &str, to: &str) -> MeasureFilter {
    MeasureFilter {
        from: Some(d(from)),
        to: Some(d(to)),
        ..Default::default()
    }
}

fn admitted(n: usize, enc: &str, at: &str) -> Event {
    ev(
        n,
        "discharge.admitted",
        at,
        json!({"encounter_id": enc, "site": "RX1CC", "ward": "Ward 7", "admitted_at": at, "responsible_council": "E08000035"}),
    )
}

fn drd(n: usize, enc: &str, date: &str) -> Event {
    ev(
        n,
        "discharge.ready-date-recorded",
        &format!("{date}T10:00:00Z"),
        json!({"encounter_id": enc, "discharge_ready_date": date}),
    )
}

fn pathway(n: usize, enc: &str, p: u8, at: &str) -> Event {
    ev(
        n,
        "discharge.pathway-assigned",
        at,
        json!({"encounter_id": enc, "pathway": p}),
    )
}

fn discharged(n: usize, enc: &str, at: &str, dest: &str, p: u8) -> Event {
    ev(
        n,
        "discharge.discharged",
        at,
        json!({"encounter_id": enc, "discharged_at": at, "destination": dest, "pathway": p}),
    )
}

#[test]
fn waiting_for_follows_the_referral_and_package() {
    let mut events = vec![
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        pathway(3, "E1", 1, "2026-11-03T11:00:00Z"),
    ];
    let row = |events: &[Event]| delay_row(&journey(events)).unwrap();
    assert_eq!(row(&events).waiting_for, "referral not yet sent");
    events.push(ev(
        4,
        "referral.sent",
        "2026-11-03T12:00:00Z",
        json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1","encounter_id":"E1"}),
    ));
    assert_eq!(row(&events).waiting_for, "referral not yet accepted");
    assert_eq!(row(&events).referral_status, Some(ReferralStatus::Sent));
    events.push(ev(
        5,
        "referral.accepted",
        "2026-11-04T09:00:00Z",
        json!({"referral_id":"R1"}),
    ));
    assert_eq!(row(&events).waiting_for, "assessment");
    events.push(ev(
        6,
        "referral.assessment-completed",
        "2026-11-04T15:00:00Z",
        json!({"referral_id":"R1","assessment_type":"needs","outcome":"eligible"}),
    ));
    assert_eq!(row(&events).waiting_for, "care package request");
    events.push(ev(7, "care-package.requested", "2026-11-05T09:00:00Z", json!({"package_id":"P1","service_type":"home-care","referral_id":"R1","required_start":"2026-11-06"})));
    assert_eq!(row(&events).waiting_for, "provider not yet sourced");
    assert_eq!(
        row(&events).care_package_status,
        Some(PackageStatus::Requested)
    );
    let b = brokerage_rows(&journey(&events));
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].council.as_deref(), Some("E08000035"));
    assert_eq!(
        b[0].hospital
            .as_ref()
            .and_then(|h| h.discharge_ready_date)
            .map(|d| d.to_string()),
        Some("2026-11-03".into())
    );
    events.push(ev(
        8,
        "care-package.sourced",
        "2026-11-06T09:00:00Z",
        json!({"package_id":"P1","provider":"1-101","agreed_start":"2026-11-09"}),
    ));
    assert_eq!(row(&events).waiting_for, "package start date");
    assert_eq!(
        brokerage_rows(&journey(&events))[0].status,
        PackageStatus::Sourced
    );
    events.push(ev(
        9,
        "care-package.started",
        "2026-11-09T09:00:00Z",
        json!({"package_id":"P1","started_on":"2026-11-09"}),
    ));
    assert_eq!(row(&events).waiting_for, "discharge (care is in place)");
    assert!(
        brokerage_rows(&journey(&events)).is_empty(),
        "started packages leave the queue"
    );
    events.push(discharged(
        10,
        "E1",
        "2026-11-09T14:00:00Z",
        "usual-residence",
        1,
    ));
    assert!(
        delay_row(&journey(&events)).is_none(),
        "discharged people leave the worklist"
    );

    // pathway 0: a recorded delay reason is what they wait for
    let mut p0 = vec![
        admitted(1, "E2", "2026-11-01T09:00:00Z"),
        drd(2, "E2", "2026-11-02"),
        pathway(3, "E2", 0, "2026-11-02T10:00:00Z"),
    ];
    assert_eq!(row(&p0).waiting_for, "nothing recorded");
    p0.push(ev(
        4,
        "discharge.delay-recorded",
        "2026-11-03T10:00:00Z",
        json!({"encounter_id":"E2","reason":"awaiting-transport","attributed_to":"nhs"}),
    ));
    assert_eq!(row(&p0).waiting_for, "awaiting transport");
    // pathway 3 with a nursing package requested: a care home bed
    let p3 = [
        admitted(1, "E3", "2026-11-01T09:00:00Z"),
        drd(2, "E3", "2026-11-02"),
        pathway(3, "E3", 3, "2026-11-02T10:00:00Z"),
        ev(
            4,
            "referral.sent",
            "2026-11-02T11:00:00Z",
            json!({"referral_id":"R3","to_council":"E08000035","from_org":"RX1"}),
        ),
        ev(
            5,
            "referral.accepted",
            "2026-11-02T12:00:00Z",
            json!({"referral_id":"R3"}),
        ),
        ev(
            6,
            "care-package.requested",
            "2026-11-03T12:00:00Z",
            json!({"package_id":"P3","service_type":"nursing","referral_id":"R3"}),
        ),
    ];
    assert_eq!(row(&p3).waiting_for, "care home bed");
}

#[test]
fn a_cancelled_discharge_puts_the_person_back_on_the_worklist() {
    let events = vec![
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        discharged(3, "E1", "2026-11-05T12:00:00Z", "usual-residence", 0),
        ev(
            4,
            "discharge.discharge-cancelled",
            "2026-11-05T13:00:00Z",
            json!({"encounter_id":"E1"}),
        ),
    ];
    let j = journey(&events);
    let row = delay_row(&j).expect("back in hospital");
    assert_eq!(row.discharge_ready_date.to_string(), "2026-11-03");
    let m = flow(
        [person_facts(&j)],
        &period("2026-11-01", "2026-11-10"),
        d("2026-11-10"),
    );
    assert_eq!(m.discharges, 0);
    assert_eq!(m.admissions, 1);
    // still in hospital: delayed on each day from the DRD (3rd) up to, not including, today (10th)
    assert_eq!(m.delayed_bed_days, 7);
    assert_eq!(m.delayed_now, 1);
    assert_eq!(m.delayed_bed_days_by_day[&d("2026-11-03")], 1);
    assert_eq!(m.delayed_bed_days_by_day[&d("2026-11-02")], 0);
}

#[test]
fn two_stays_readmission_and_a_package_suspended_during_it() {
    let events = vec![
        admitted(1, "E1", "2026-09-01T09:00:00Z"),
        drd(2, "E1", "2026-09-03"),
        pathway(3, "E1", 1, "2026-09-03T10:00:00Z"),
        ev(
            4,
            "care-package.requested",
            "2026-09-03T12:00:00Z",
            json!({"package_id":"P1","service_type":"reablement"}),
        ),
        ev(
            5,
            "care-package.started",
            "2026-09-06T09:00:00Z",
            json!({"package_id":"P1","started_on":"2026-09-06"}),
        ),
        discharged(6, "E1", "2026-09-06T11:00:00Z", "usual-residence", 1),
        admitted(7, "E2", "2026-09-20T22:00:00Z"),
        ev(
            8,
            "care-package.suspended",
            "2026-09-21T09:00:00Z",
            json!({"package_id":"P1","reason":"readmitted"}),
        ),
        drd(9, "E2", "2026-09-25"),
    ];
    let j = journey(&events);
    assert_eq!(j.stays.len(), 2);
    assert_eq!(j.current_stay().unwrap().encounter_id, "E2");
    assert_eq!(j.care_packages[0].status, PackageStatus::Suspended);
    assert!(
        brokerage_rows(&j).is_empty(),
        "a suspended package is not waiting for brokerage"
    );
    let row = delay_row(&j).unwrap();
    assert_eq!(row.encounter_id, "E2");
    assert_eq!(row.waiting_for, "package to resume");

    let facts = person_facts(&j);
    let m = flow(
        [facts.clone()],
        &period("2026-09-01", "2026-09-30"),
        d("2026-09-30"),
    );
    assert_eq!(m.admissions, 2);
    assert_eq!(m.discharges, 1);
    assert_eq!(m.readmitted_within_30_days.numerator, 1);
    assert_eq!(m.readmitted_within_30_days.denominator, 1);
    assert_eq!(m.ready_to_discharge.median, Some(3));
    assert_eq!(m.pathway_mix["1"], 1);
    assert_eq!(m.discharged_to_usual_residence.share, Some(1.0));
    // first stay: the 3rd, 4th and 5th; second stay: the 25th to the 29th
    assert_eq!(m.delayed_bed_days, 8);
    // reablement on pathway 1: pending until day 91 has passed, then not at home (readmitted)
    assert_eq!(m.at_home_91_days_after_reablement.pending, 1);
    // known in December: day 91 after 6 September is 6 December
    let later = flow(
        [facts],
        &period("2026-12-01", "2026-12-31"),
        d("2026-12-31"),
    );
    assert_eq!(
        later.at_home_91_days_after_reablement.at_home.denominator,
        1
    );
    assert_eq!(later.at_home_91_days_after_reablement.at_home.numerator, 0);
}

#[test]
fn the_91_day_outcome_counts_people_at_home_on_day_91_and_those_aged_65_and_over_apart() {
    #[derive(Clone, Copy)]
    enum After {
        Home,
        InHospitalOnDay91,
        ReadmittedAndHomeAgain,
        CareHome,
        Died,
    }
    let person = |after: After, born: Option<&str>| {
        let mut events = vec![
            admitted(1, "E1", "2026-06-01T09:00:00Z"),
            drd(2, "E1", "2026-06-02"),
            ev(
                3,
                "care-package.requested",
                "2026-06-02T12:00:00Z",
                json!({"package_id":"P1","service_type":"reablement"}),
            ),
            ev(
                4,
                "care-package.started",
                "2026-06-04T09:00:00Z",
                json!({"package_id":"P1","started_on":"2026-06-04"}),
            ),
            discharged(5, "E1", "2026-06-04T11:00:00Z", "usual-residence", 1),
        ];
        if let Some(born) = born {
            events.push(ev(
                9,
                "person.identified",
                "2026-06-01T09:00:00Z",
                json!({"birth_date": born, "nhs_number_status": "01", "local_ids": []}),
            ));
        }
        match after {
            After::Home => {}
            After::InHospitalOnDay91 => events.push(admitted(6, "E2", "2026-07-20T09:00:00Z")),
            After::ReadmittedAndHomeAgain => {
                events.push(admitted(6, "E2", "2026-07-20T09:00:00Z"));
                events.push(discharged(
                    7,
                    "E2",
                    "2026-07-24T11:00:00Z",
                    "usual-residence",
                    0,
                ));
            }
            After::Died => {
                events.push(admitted(6, "E2", "2026-07-20T09:00:00Z"));
                events.push(discharged(7, "E2", "2026-07-24T11:00:00Z", "died", 0));
            }
            After::CareHome => {
                events.push(ev(
                    7,
                    "care-package.requested",
                    "2026-08-01T09:00:00Z",
                    json!({"package_id":"P2","service_type":"residential"}),
                ));
                events.push(ev(
                    8,
                    "care-package.started",
                    "2026-08-02T09:00:00Z",
                    json!({"package_id":"P2","started_on":"2026-08-02"}),
                ));
            }
        }
        person_facts(&journey(&events))
    };
    // 65 on the day of discharge (4 June 2026), 64 then, and not known.
    let (older, turned_65, younger) = (Some("1940-03-01"), Some("1961-06-04"), Some("1961-06-05"));
    let people = vec![
        person(After::Home, older),
        person(After::ReadmittedAndHomeAgain, turned_65),
        person(After::InHospitalOnDay91, older),
        person(After::CareHome, older),
        person(After::Died, older),
        person(After::Home, younger),
        person(After::Home, None),
    ];
    let m = flow(
        people.clone(),
        &period("2026-06-01", "2026-06-30"),
        d("2026-11-01"),
    );
    assert_eq!(m.at_home_91_days_after_reablement.at_home.denominator, 0);
    // discharged 4 June: day 91 is 3 September, so the outcome is reported for September
    let known = flow(people, &period("2026-09-01", "2026-09-30"), d("2026-11-01"));
    let o = &known.at_home_91_days_after_reablement;
    // at home: the two at home, the one home again after a readmission, the younger and the
    // unknown; not: in hospital on day 91, in a care home, died
    assert_eq!(
        (o.at_home.numerator, o.at_home.denominator, o.pending),
        (4, 7, 0)
    );
    // ASCOF 2B(1): the five aged 65 or over, of whom two are at home
    assert_eq!(
        (o.aged_65_and_over.numerator, o.aged_65_and_over.denominator),
        (2, 5)
    );
    assert_eq!(o.aged_65_and_over.share, Some(0.4));
    assert_eq!(o.age_unknown, 1);
    assert_eq!(m.ready_to_discharge.count, 7);
    assert_eq!(m.ready_to_discharge.median, Some(2));
    assert_eq!(m.ready_to_discharge_by_attribution["none"].count, 7);
}

#[test]
fn filters_by_site_and_council() {
    let mut other = admitted(1, "E9", "2026-11-01T09:00:00Z");
    if let handover_events::EventData::Admitted(a) = &mut other.data {
        a.site = "RR801".into();
        a.responsible_council = Some("E08000032".into());
    }
    let a = person_facts(&journey(&[admitted(1, "E1", "2026-11-01T09:00:00Z")]));
    let b = person_facts(&journey(&[other]));
    let admissions = |site: Option<&str>, council: Option<&str>| {
        let f = MeasureFilter {
            site: site.map(Into::into),
            council: council.map(Into::into),
            ..period("2026-11-01", "2026-11-02")
        };
        flow([a.clone(), b.clone()], &f, d("2026-11-02")).admissions
    };
    assert_eq!(admissions(None, None), 2);
    assert_eq!(admissions(Some("RX1CC"), None), 1);
    assert_eq!(admissions(None, Some("E08000032")), 1);
    assert_eq!(admissions(Some("RX1CC"), Some("E08000032")), 0);
}

/// Lifecycle corrections the black-box probes found misfiled (seventeenth session).
#[test]
fn late_admissions_reused_visit_numbers_and_phantom_stays_keep_the_right_stay_current() {
    use handover_projections::journey::StayStatus;
    // An A01 back-loaded after the A03 of the same stay (admitted before it was discharged)
    // does not undo the discharge.
    let j = journey(&[
        drd(1, "E1", "2026-11-05"),
        discharged(2, "E1", "2026-11-08T10:00:00Z", "usual-residence", 1),
        admitted(3, "E1", "2026-11-01T09:00:00Z"),
    ]);
    assert_eq!(j.stays.len(), 1);
    let s = j.current_stay().unwrap();
    assert_eq!(s.status, StayStatus::Discharged);
    assert_eq!(s.discharge_ready_date.map(|d| d.0), Some(d("2026-11-05")));
    assert!(delay_row(&j).is_none());

    // A visit number used again after its discharge: a second episode; the first keeps its
    // discharge and ready date.
    let j = journey(&[
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        discharged(3, "E1", "2026-11-05T10:00:00Z", "care-home", 2),
        admitted(4, "E1", "2026-11-20T09:00:00Z"),
    ]);
    assert_eq!(j.stays.len(), 2, "{:?}", j.stays);
    assert_eq!(j.stays[0].status, StayStatus::Discharged);
    assert_eq!(
        j.stays[0].discharge_ready_date.map(|d| d.0),
        Some(d("2026-11-03"))
    );
    let s = j.current_stay().unwrap();
    assert_eq!(s.status, StayStatus::InHospital);
    assert_eq!(s.discharge_ready_date, None);
    assert_eq!(s.discharged_at, None);

    // A01, A03, A11 (the stay never happened), then a new admission later: in hospital,
    // with no discharge time carried over.
    let j = journey(&[
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        discharged(2, "E1", "2026-11-05T10:00:00Z", "usual-residence", 1),
        ev(
            3,
            "discharge.admission-cancelled",
            "2026-11-06T10:00:00Z",
            json!({"encounter_id": "E1"}),
        ),
        admitted(4, "E1", "2026-11-10T09:00:00Z"),
    ]);
    let s = j.current_stay().unwrap();
    assert_eq!(s.status, StayStatus::InHospital);
    assert_eq!(s.discharged_at, None);

    // A ready date for an encounter id the trust never admitted, after the real stay's
    // discharge: the discharged stay stays current, and nobody is on the delay worklist.
    let j = journey(&[
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        discharged(2, "E1", "2026-11-05T10:00:00Z", "usual-residence", 1),
        drd(3, "X-9", "2026-11-20"),
    ]);
    assert_eq!(j.stays.len(), 2);
    assert_eq!(j.current_stay().unwrap().encounter_id, "E1");
    assert!(delay_row(&j).is_none());
    // Nor does it count in the measures.
    assert_eq!(person_facts(&j).stays.len(), 1);
    // Alone, such a stay is still the person's current one (a trust sending ready dates
    // but no ADT).
    let j = journey(&[drd(1, "X-9", "2026-11-20")]);
    assert_eq!(j.current_stay().unwrap().encounter_id, "X-9");
}

#[test]
fn a_package_requested_again_after_cancellation_and_a_referral_sent_again_reopen() {
    let j = journey(&[
        ev(
            1,
            "care-package.requested",
            "2026-11-01T12:00:00Z",
            json!({"package_id":"P1","service_type":"home-care"}),
        ),
        ev(
            2,
            "care-package.cancelled",
            "2026-11-02T12:00:00Z",
            json!({"package_id":"P1","reason":"family declined"}),
        ),
        ev(
            3,
            "care-package.requested",
            "2026-11-04T12:00:00Z",
            json!({"package_id":"P1","service_type":"home-care"}),
        ),
    ]);
    assert_eq!(j.care_packages[0].status, PackageStatus::Requested);
    assert_eq!(j.care_packages[0].status_reason, None);
    assert_eq!(brokerage_rows(&j).len(), 1);

    let j = journey(&[
        ev(
            1,
            "referral.sent",
            "2026-11-01T12:00:00Z",
            json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1"}),
        ),
        ev(
            2,
            "referral.declined",
            "2026-11-02T12:00:00Z",
            json!({"referral_id":"R1","reason":"not eligible"}),
        ),
        ev(
            3,
            "referral.sent",
            "2026-11-04T12:00:00Z",
            json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1"}),
        ),
    ]);
    assert_eq!(j.referrals[0].status, ReferralStatus::Sent);
    assert_eq!(j.referrals[0].closed_reason, None);
    assert_eq!(j.referrals[0].responded_at, None);
}

#[test]
fn episodes_of_a_reused_visit_number_keep_their_own_admissions_and_referrals() {
    use handover_projections::journey::StayStatus;
    let referral = |n: usize, id: &str, at: &str| {
        ev(
            n,
            "referral.sent",
            at,
            json!({"referral_id": id, "to_council":"E08000035","from_org":"RX1","encounter_id":"E1"}),
        )
    };
    let j = journey(&[
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        referral(2, "R-OLD", "2026-11-02T09:00:00Z"),
        ev(
            3,
            "referral.accepted",
            "2026-11-02T12:00:00Z",
            json!({"referral_id":"R-OLD"}),
        ),
        discharged(4, "E1", "2026-11-05T10:00:00Z", "usual-residence", 1),
        admitted(5, "E1", "2026-11-10T09:00:00Z"),
        drd(6, "E1", "2026-11-12"),
        // The first episode's A01, back-loaded after the second episode began (its event
        // time is when it was keyed in).
        ev(
            7,
            "discharge.admitted",
            "2026-11-20T09:00:00Z",
            json!({"encounter_id": "E1", "site": "RX1CC", "ward": "Ward 1", "admitted_at": "2026-11-01T09:00:00Z"}),
        ),
    ]);
    assert_eq!(j.stays.len(), 2, "{:?}", j.stays);
    assert_eq!(j.stays[0].status, StayStatus::Discharged);
    let current = j.current_stay().unwrap();
    assert_eq!(current.status, StayStatus::InHospital);
    assert_eq!(
        current.admitted_at.map(|t| t.to_rfc3339()),
        Some("2026-11-10T09:00:00Z".to_string()),
        "the back-loaded A01 went to the first episode"
    );
    assert_eq!(current.ward.as_deref(), Some("Ward 7"));
    // The first episode's accepted referral is not the second's.
    let row = delay_row(&j).unwrap();
    assert_eq!(row.referral_status, None, "{row:?}");
    assert_eq!(row.waiting_for, "nothing recorded", "{row:?}");
}

#[test]
fn a_reopened_referral_waits_for_its_own_assessment_and_brokerage_shows_the_referring_stay() {
    let j = journey(&[
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        ev(
            3,
            "referral.sent",
            "2026-11-03T12:00:00Z",
            json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1","encounter_id":"E1"}),
        ),
        ev(
            4,
            "referral.accepted",
            "2026-11-04T09:00:00Z",
            json!({"referral_id":"R1"}),
        ),
        ev(
            5,
            "referral.assessment-completed",
            "2026-11-04T15:00:00Z",
            json!({"referral_id":"R1","assessment_type":"needs","outcome":"not-eligible"}),
        ),
        ev(
            6,
            "referral.declined",
            "2026-11-05T09:00:00Z",
            json!({"referral_id":"R1","reason":"not eligible"}),
        ),
        ev(
            7,
            "referral.sent",
            "2026-11-08T12:00:00Z",
            json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1","encounter_id":"E1"}),
        ),
    ]);
    assert!(j.referrals[0].assessments.is_empty());
    assert_eq!(
        delay_row(&j).unwrap().waiting_for,
        "referral not yet accepted"
    );

    // A package from RX1's stay while the person is also in hospital at RR8: the brokerage
    // row shows RX1's stay, the one referred from.
    let rr8 = Event::from_json(
        json!({"specversion":"1.0","id":"rr8-a","source":"urn:ods:RR8:pas",
        "type":"handover.discharge.admitted.v1","subject":NHS,"time":"2026-11-09T09:00:00Z",
        "data":{"encounter_id":"RR8-E9","site":"RR801","admitted_at":"2026-11-09T09:00:00Z"}}),
    )
    .unwrap();
    let mut j2 = j.clone();
    j2.apply(8, &rr8);
    j2.apply(
        9,
        &ev(
            9,
            "care-package.requested",
            "2026-11-10T12:00:00Z",
            json!({"package_id":"P1","service_type":"home-care","referral_id":"R1"}),
        ),
    );
    let rows = brokerage_rows(&j2);
    let hospital = rows[0].hospital.as_ref().unwrap();
    assert_eq!(hospital.trust.as_deref(), Some("RX1"));
    assert_eq!(hospital.site.as_deref(), Some("RX1CC"));
}

#[test]
fn a_package_a_council_requested_without_a_referral_or_stay_is_on_its_brokerage_worklist() {
    // A community or self referral: the council's own system asks brokerage for care.
    let j = journey(&[ev(
        1,
        "care-package.requested",
        "2026-11-20T09:00:00Z",
        json!({"package_id": "PKG-C1", "service_type": "home-care", "required_start": "2026-11-25",
               "calls_per_day": 4, "carers_per_call": 2}),
    )]);
    let rows = brokerage_rows(&j);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].council.as_deref(), Some("E08000035"));
    // Double-handed care is on the row: it is much of what a broker sources on.
    assert_eq!(
        (rows[0].calls_per_day, rows[0].carers_per_call),
        (Some(4), Some(2))
    );
    assert!(rows[0].hospital.is_none());
    // A referral's council still comes first when there is one.
    let j = journey(&[
        ev(
            1,
            "referral.sent",
            "2026-11-19T09:00:00Z",
            json!({"referral_id": "R1", "to_council": "E08000032", "from_org": "RX1"}),
        ),
        ev(
            2,
            "care-package.requested",
            "2026-11-20T09:00:00Z",
            json!({"package_id": "PKG-C2", "service_type": "home-care", "referral_id": "R1"}),
        ),
    ]);
    assert_eq!(brokerage_rows(&j)[0].council.as_deref(), Some("E08000032"));
    // Leeds' own system asks for care, without a referral, for someone whose stay names
    // Bradford: Leeds is brokering it.
    let mut stay = admitted(1, "E1", "2026-11-18T09:00:00Z");
    if let handover_events::EventData::Admitted(a) = &mut stay.data {
        a.responsible_council = Some("E08000032".into());
    }
    let j = journey(&[
        stay,
        ev(
            2,
            "care-package.requested",
            "2026-11-20T09:00:00Z",
            json!({"package_id": "PKG-C3", "service_type": "home-care"}),
        ),
    ]);
    assert_eq!(brokerage_rows(&j)[0].council.as_deref(), Some("E08000035"));
}

#[test]
fn a_person_known_only_by_a_local_id_is_named_by_it_on_a_worklist_row() {
    let local = json!({"system": "https://rx1.nhs.uk/id/mrn", "value": "RX1-777"});
    let no_subject = |n: usize, ty: &str, time: &str, mut data: Value| {
        data["local_id"] = local.clone();
        Event::from_json(
            json!({"specversion":"1.0","id":format!("l{n}"),"source":"urn:ods:RX1:pas",
            "type":format!("handover.{ty}.v1"),"time":time,"data":data}),
        )
        .unwrap()
    };
    let j = journey(&[
        no_subject(
            1,
            "discharge.admitted",
            "2026-11-10T09:00:00Z",
            json!({"encounter_id": "E1", "site": "RX1CC", "admitted_at": "2026-11-10T09:00:00Z"}),
        ),
        no_subject(
            2,
            "discharge.ready-date-recorded",
            "2026-11-12T09:00:00Z",
            json!({"encounter_id": "E1", "discharge_ready_date": "2026-11-12"}),
        ),
    ]);
    let row = delay_row(&j).unwrap();
    assert_eq!(row.person.nhs_number, None);
    let id = row.person.local_id.unwrap();
    assert_eq!(
        (id.system.as_str(), id.value.as_str()),
        ("https://rx1.nhs.uk/id/mrn", "RX1-777")
    );
    // With an NHS number the row is named by it alone.
    let row = delay_row(&journey(&[
        admitted(1, "E1", "2026-11-10T09:00:00Z"),
        drd(2, "E1", "2026-11-12"),
    ]))
    .unwrap();
    assert!(row.person.nhs_number.is_some() && row.person.local_id.is_none());
}

#[test]
fn a_verified_nhs_number_stays_verified_when_a_later_message_says_nothing_of_it() {
    let identified = |n: usize, status: &str| {
        ev(
            n,
            "person.identified",
            &format!("2026-11-2{n}T09:00:00Z"),
            json!({"nhs_number_status": status, "local_ids": [], "family_name": "Example"}),
        )
    };
    // Verified, then an update that did not carry the status (the adapters' "02").
    let j = journey(&[identified(1, "01"), identified(2, "02")]);
    assert_eq!(j.identity.nhs_number_status.as_deref(), Some("01"));
    // Any other change is taken, and "02" stands where nothing was verified.
    let j = journey(&[identified(1, "01"), identified(2, "03")]);
    assert_eq!(j.identity.nhs_number_status.as_deref(), Some("03"));
    let j = journey(&[identified(1, "03"), identified(2, "02")]);
    assert_eq!(j.identity.nhs_number_status.as_deref(), Some("02"));
}

#[test]
fn an_assessment_under_a_referral_no_acceptance_was_seen_for_means_it_was_taken() {
    let assessed = ev(
        2,
        "referral.assessment-completed",
        "2026-11-21T09:00:00Z",
        json!({"referral_id": "R1", "assessment_type": "needs", "outcome": "eligible"}),
    );
    // Known only from the council's assessment: not "sent", waiting for an answer.
    let j = journey(std::slice::from_ref(&assessed));
    assert_eq!(j.referrals[0].status, ReferralStatus::Accepted);
    // Sent, then assessed without an acceptance on record: taken.
    let sent = ev(
        1,
        "referral.sent",
        "2026-11-20T09:00:00Z",
        json!({"referral_id": "R1", "to_council": "E08000035", "from_org": "RX1"}),
    );
    let j = journey(&[sent.clone(), assessed.clone()]);
    assert_eq!(j.referrals[0].status, ReferralStatus::Accepted);
    // A declined or withdrawn referral stays so.
    let declined = ev(
        3,
        "referral.declined",
        "2026-11-20T12:00:00Z",
        json!({"referral_id": "R1", "reason": "not eligible"}),
    );
    let j = journey(&[sent, declined, assessed]);
    assert_eq!(j.referrals[0].status, ReferralStatus::Declined);
}

#[test]
fn a_cancelled_discharge_takes_its_pathway_with_it() {
    let events = vec![
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        pathway(3, "E1", 1, "2026-11-03T11:00:00Z"),
        discharged(4, "E1", "2026-11-05T12:00:00Z", "usual-residence", 0),
        ev(
            5,
            "discharge.discharge-cancelled",
            "2026-11-05T13:00:00Z",
            json!({"encounter_id":"E1"}),
        ),
    ];
    let j = journey(&events);
    assert_eq!(j.stays[0].pathway, Some(1), "the assigned pathway stands");
    let row = delay_row(&j).expect("back in hospital");
    assert_eq!(row.pathway, Some(1));
    assert_eq!(row.waiting_for, "referral not yet sent");
    // without a pathway assigned before, the cancelled discharge's goes and none is left
    let mut without = events.clone();
    without.remove(2);
    assert_eq!(journey(&without).stays[0].pathway, None);
    // a pathway assigned after the discharge is the one kept
    let mut later = events.clone();
    later.insert(4, pathway(6, "E1", 2, "2026-11-05T12:30:00Z"));
    assert_eq!(journey(&later).stays[0].pathway, Some(2));
}

#[test]
fn a_delay_counts_against_the_council_of_the_latest_referral_in_measures_as_on_the_worklist() {
    // No responsible council on the stay: Bradford declined, then Leeds was referred to.
    let stay = ev(
        1,
        "discharge.admitted",
        "2026-11-01T09:00:00Z",
        json!({"encounter_id": "E1", "site": "RX1CC", "admitted_at": "2026-11-01T09:00:00Z"}),
    );
    let referral = |n: usize, id: &str, council: &str, at: &str| {
        ev(
            n,
            "referral.sent",
            at,
            json!({"referral_id": id, "from_org": "RX1", "to_council": council, "encounter_id": "E1"}),
        )
    };
    let events = vec![
        stay,
        drd(2, "E1", "2026-11-03"),
        referral(3, "R1", "E08000032", "2026-11-03T12:00:00Z"),
        ev(
            4,
            "referral.declined",
            "2026-11-04T09:00:00Z",
            json!({"referral_id": "R1", "reason": "not ordinarily resident"}),
        ),
        referral(5, "R2", "E08000035", "2026-11-04T10:00:00Z"),
    ];
    let j = journey(&events);
    assert_eq!(delay_row(&j).unwrap().council.as_deref(), Some("E08000035"));
    let by = |council: &str| {
        flow(
            [person_facts(&j)],
            &MeasureFilter {
                council: Some(council.into()),
                ..period("2026-11-01", "2026-11-10")
            },
            d("2026-11-10"),
        )
        .delayed_bed_days
    };
    assert_eq!(by("E08000035"), 7);
    assert_eq!(by("E08000032"), 0);
}

#[test]
fn a_cancelled_admission_shows_no_days_delayed() {
    let events = vec![
        admitted(1, "E1", "2026-11-01T09:00:00Z"),
        drd(2, "E1", "2026-11-03"),
        ev(
            3,
            "discharge.admission-cancelled",
            "2026-11-04T09:00:00Z",
            json!({"encounter_id":"E1"}),
        ),
    ];
    let j = journey(&events);
    assert_eq!(Journey::days_delayed(&j.stays[0], d("2026-11-10")), None);
    let live = journey(&events[..2]);
    assert_eq!(
        Journey::days_delayed(&live.stays[0], d("2026-11-10")),
        Some(7)
    );
}

#[test]
fn a_person_with_thousands_of_stays_has_each_known_stay_counted_once() {
    // Counting a stay used to look for the current stay once per stay, and finding a
    // stay's referrals looked at every stay: quadratic, 0.45 s of projection per event for
    // a person with 5,000 stays. The counts must be the same as ever.
    let n = 3_000;
    let mut events = Vec::new();
    let day = |i: usize| {
        chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap() + chrono::Days::new(i as u64 * 2)
    };
    for i in 0..n {
        let enc = format!("E{i}");
        let on = day(i);
        events.push(admitted(events.len(), &enc, &format!("{on}T09:00:00Z")));
        events.push(discharged(
            events.len(),
            &enc,
            &format!("{on}T15:00:00Z"),
            "usual-residence",
            0,
        ));
    }
    // A ready date naming an encounter no admission made known: not a stay anyone counts
    // while another is current.
    events.push(drd(events.len(), "PHANTOM", "2020-01-01"));
    // A referral for one old stay, found among thousands.
    events.push(ev(
        events.len(),
        "referral.sent",
        "2000-01-11T12:00:00Z",
        json!({"referral_id": "R1", "to_council": "E08000032", "from_org": "RX1", "encounter_id": "E5"}),
    ));
    let j = journey(&events);
    assert_eq!(j.stays.len(), n + 1);
    let facts = person_facts(&j);
    assert_eq!(
        facts.stays.len(),
        n,
        "every admitted stay, not the phantom one"
    );
    let councils: Vec<_> = facts
        .stays
        .iter()
        .filter_map(|s| s.council.as_deref())
        .collect();
    assert_eq!(
        councils.len(),
        n,
        "each stay names the trust's responsible council"
    );
    assert!(delay_row(&j).is_none(), "nobody is in hospital");

    // Admitted again and past the ready date: the new stay is current and on the worklist.
    let mut more = events.clone();
    more.push(admitted(more.len(), "NOW", "2026-11-01T09:00:00Z"));
    more.push(drd(more.len(), "NOW", "2026-11-05"));
    let j = journey(&more);
    let facts = person_facts(&j);
    assert_eq!(facts.stays.len(), n + 1);
    let row = delay_row(&j).unwrap();
    assert_eq!(row.encounter_id, "NOW");
    assert_eq!(row.waiting_for, "nothing recorded");
}

#[test]
fn a_transfer_to_another_provider_is_not_a_readmission() {
    let transferred_in = |n: usize, enc: &str, at: &str| {
        ev(
            n,
            "discharge.admitted",
            at,
            json!({"encounter_id": enc, "site": "RX1CC", "admitted_at": at, "admission_method": "transfer"}),
        )
    };
    let first = |n| admitted(n, "E1", "2026-09-01T09:00:00Z");
    let out = |n| discharged(n, "E1", "2026-09-06T11:00:00Z", "other", 2);
    let transfer = journey(&[
        first(1),
        out(2),
        transferred_in(3, "E2", "2026-09-06T12:00:00Z"),
    ]);
    let m = flow(
        [person_facts(&transfer)],
        &period("2026-09-01", "2026-09-30"),
        d("2026-09-30"),
    );
    assert_eq!(m.admissions, 2);
    assert_eq!(m.readmitted_within_30_days.denominator, 1);
    assert_eq!(m.readmitted_within_30_days.numerator, 0);
    // The same second stay admitted as an emergency is a readmission.
    let emergency = journey(&[first(1), out(2), admitted(3, "E2", "2026-09-06T12:00:00Z")]);
    let m = flow(
        [person_facts(&emergency)],
        &period("2026-09-01", "2026-09-30"),
        d("2026-09-30"),
    );
    assert_eq!(m.readmitted_within_30_days.numerator, 1);
}
