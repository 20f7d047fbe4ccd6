//! A stream mixing `care-package.requested.v1` and `.v2` projects into one read-model shape:
//! v1 keeps its flat figures and has no schedule; v2 keeps its schedule and its figures are
//! derived from it. Replaying out of order gives the same journey.
#![allow(clippy::unwrap_used)]

use handover_events::catalogue::Weekday;
use handover_events::Event;
use handover_projections::Journey;
use serde_json::{json, Value};

fn ev(id: &str, version: u8, time: &str, data: Value) -> Event {
    Event::from_json(json!({
        "specversion": "1.0", "id": id, "source": "urn:gss:E08000035:brokerage",
        "type": format!("handover.care-package.requested.v{version}"),
        "subject": "9434765919", "time": time, "data": data
    }))
    .unwrap()
}

#[test]
fn v1_and_v2_requests_fold_into_one_package_shape() {
    let v1 = ev(
        "a",
        1,
        "2026-11-20T09:00:00Z",
        json!({"package_id": "P1", "service_type": "home-care", "hours_per_week": 7.0, "calls_per_day": 2, "carers_per_call": 1}),
    );
    let v2 = ev(
        "b",
        2,
        "2026-11-21T09:00:00Z",
        json!({"package_id": "P2", "service_type": "reablement", "schedule": {"visits": [
            {"days": ["mon","tue","wed","thu","fri","sat","sun"], "time": "08:00", "duration_minutes": 45, "carers": 2},
            {"days": ["mon","tue","wed","thu","fri","sat","sun"], "time": "12:30", "duration_minutes": 30, "carers": 1},
            {"days": ["mon","wed","fri"], "time": "18:00", "duration_minutes": 30, "carers": 1}
        ]}}),
    );
    // a v2 re-request of the v1 package replaces its figures with the schedule's
    let v2_again = ev(
        "c",
        2,
        "2026-11-22T09:00:00Z",
        json!({"package_id": "P1", "service_type": "home-care", "schedule": {"visits": [
            {"days": ["sat","sun"], "time": "09:00", "duration_minutes": 60, "carers": 1}
        ]}}),
    );
    let mut j = Journey::new(None);
    j.apply(1, &v1);
    let p1 = &j.care_packages[0];
    assert_eq!(
        (p1.hours_per_week, p1.calls_per_day, p1.carers_per_call),
        (Some(7.0), Some(2), Some(1))
    );
    assert!(
        p1.schedule.is_none(),
        "v1 is upcast without inventing a schedule"
    );

    j.apply(2, &v2);
    let p2 = &j.care_packages[1];
    assert_eq!(
        (p2.hours_per_week, p2.calls_per_day, p2.carers_per_call),
        (Some(10.25), Some(3), Some(2))
    );
    let s = p2.schedule.as_ref().unwrap();
    assert_eq!(s.visits.len(), 3);
    assert_eq!(
        s.visits[2].days,
        vec![Weekday::Mon, Weekday::Wed, Weekday::Fri]
    );

    j.apply(3, &v2_again);
    let p1 = &j.care_packages[0];
    assert_eq!(
        (p1.hours_per_week, p1.calls_per_day, p1.carers_per_call),
        (Some(2.0), Some(1), Some(1))
    );
    assert!(p1.schedule.is_some());

    // arrival order does not matter, and the timeline keeps each version's type
    let mut k = Journey::new(None);
    k.apply(3, &v2_again);
    k.apply(2, &v2);
    k.apply(1, &v1);
    assert_eq!(k.care_packages.len(), 2);
    let mut a = j.care_packages.clone();
    let mut b = k.care_packages.clone();
    a.sort_by(|x, y| x.package_id.cmp(&y.package_id));
    b.sort_by(|x, y| x.package_id.cmp(&y.package_id));
    assert_eq!(a, b);
    let types: Vec<_> = j.timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "handover.care-package.requested.v1",
            "handover.care-package.requested.v2",
            "handover.care-package.requested.v2"
        ]
    );
    // and a v2 request's normalised data round-trips through the stored timeline
    let stored = serde_json::to_string(&j).unwrap();
    let back: Journey = serde_json::from_str(&stored).unwrap();
    assert_eq!(back, j);
}

#[test]
fn a_malformed_schedule_is_rejected_at_ingest_with_a_pointer() {
    let bad = Event::from_json(json!({
        "specversion": "1.0", "id": "x", "source": "urn:gss:E08000035:brokerage",
        "type": "handover.care-package.requested.v2", "subject": "9434765919",
        "time": "2026-11-20T09:00:00Z",
        "data": {"package_id": "P", "service_type": "home-care",
                 "schedule": {"visits": [{"days": ["monday"], "time": "8am", "duration_minutes": 0, "carers": 1}]}}
    }))
    .unwrap_err();
    // The optional schedule is an `anyOf` (schedule or null), so the schema names it as a
    // whole; nothing from the request is stored.
    assert!(
        bad.0
            .iter()
            .any(|e| e.pointer.starts_with("/data/schedule")),
        "{:?}",
        bad.0
    );
}
