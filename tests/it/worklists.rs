//! The worklists over real HTTP, in the order their users work them: the discharge-delays
//! worklist longest delayed first (then site, then encounter), paged, filtered and scoped by
//! organisation through its per-organisation index; the brokerage queue with people delayed
//! in hospital first, then by required start.

use chrono::Duration as Days;
use handover_api::Role;
use serde_json::{json, Value};

use crate::support::{ev, nhs_numbers, token_for, Backbone};

const PAS: &str = "urn:ods:RX1:pas";
const BROKERAGE: &str = "urn:gss:E08000035:brokerage";

async fn get(b: &Backbone, path: &str, token: &str) -> Value {
    let r = b
        .http
        .get(format!("{}{path}", b.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn encounters(v: &Value) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["encounter_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worklists_come_in_working_order_paged_filtered_and_scoped() {
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let day = |offset: i64| (today + Days::days(offset)).format("%Y-%m-%d").to_string();
    let at = |offset: i64| format!("{}T09:00:00Z", day(offset));
    let nhs = nhs_numbers(943_100_000, 6);
    // (person, site, DRD offset, discharged?, package required start offset)
    let people = [
        (0, "RX1CC", -5, false, Some(4)),
        (1, "RX1AB", -10, false, None),
        (2, "RX1AA", -5, false, Some(1)),
        (3, "RX1CC", 3, false, Some(2)),
        (4, "RX1CC", -20, true, Some(0)),
        (5, "RX1CC", -7, false, None),
    ];
    let mut events = Vec::new();
    for (i, site, drd, discharged, package) in people {
        let n = &nhs[i];
        let enc = format!("ENC-{i}");
        events.push(ev(
            &format!("{i}-a"),
            PAS,
            "discharge.admitted",
            n,
            &at(-30),
            json!({"encounter_id": enc, "site": site, "admitted_at": at(-30),
                   "responsible_council": "E08000035"}),
        ));
        events.push(ev(
            &format!("{i}-r"),
            PAS,
            "discharge.ready-date-recorded",
            n,
            &at(-29),
            json!({"encounter_id": enc, "discharge_ready_date": day(drd)}),
        ));
        if let Some(start) = package {
            events.push(ev(
                &format!("{i}-p"),
                BROKERAGE,
                "care-package.requested",
                n,
                &at(-28),
                json!({"package_id": format!("PKG-{i}"), "service_type": "home-care",
                       "required_start": day(start)}),
            ));
        }
        if discharged {
            events.push(ev(
                &format!("{i}-d"),
                PAS,
                "discharge.discharged",
                n,
                &at(-1),
                json!({"encounter_id": enc, "discharged_at": at(-1)}),
            ));
        }
    }
    let r = b.post_events(&Value::Array(events)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    b.caught_up().await;

    let trust = token_for(Role::DischargeTeam, "RX1");
    let council = token_for(Role::SocialWorker, "E08000035");
    let delays = "/v1/worklists/discharge-delays";
    // Past their DRD and in hospital: 1 (10 days), 5 (7), then 2 and 0 (5 days, by site).
    let all = get(&b, delays, &trust).await;
    assert_eq!(encounters(&all), ["ENC-1", "ENC-5", "ENC-2", "ENC-0"]);
    assert_eq!(all["total"], 4);
    let days: Vec<i64> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["days_delayed"].as_i64().unwrap())
        .collect();
    assert_eq!(days, [10, 7, 5, 5]);
    // Everyone on the page was audited as read by the team, each under their own record
    // (a page's records are published together and their acknowledgements collected on
    // one subscription), and no one who was not on it.
    let auditor = token_for(Role::Auditor, "RX1");
    let worklist_reads = |v: &Value| -> Vec<Value> {
        v["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "worklist:discharge-delays")
            .cloned()
            .collect()
    };
    for i in [1, 5, 2, 0] {
        let a = get(&b, &format!("/v1/audit?nhs_number={}", nhs[i]), &auditor).await;
        let reads = worklist_reads(&a);
        assert_eq!(reads.len(), 1, "person {i}: {a}");
        let r = &reads[0];
        assert_eq!(
            (
                &r["nhs_number"],
                &r["user"],
                &r["organisation"],
                &r["role"],
                &r["reason"]
            ),
            (
                &json!(nhs[i]),
                &json!("test-discharge-team-RX1"),
                &json!("RX1"),
                &json!("discharge-team"),
                &json!("direct-care")
            ),
            "person {i}"
        );
    }
    for i in [3, 4] {
        let a = get(&b, &format!("/v1/audit?nhs_number={}", nhs[i]), &auditor).await;
        assert!(
            worklist_reads(&a).is_empty(),
            "person {i} was not on the page: {a}"
        );
    }
    let page = get(&b, &format!("{delays}?limit=2"), &trust).await;
    assert_eq!(
        (encounters(&page), &page["total"]),
        (vec!["ENC-1".into(), "ENC-5".into()], &json!(4))
    );
    let next = get(&b, &format!("{delays}?limit=2&offset=2"), &trust).await;
    assert_eq!(
        (
            encounters(&next),
            &next["total"],
            &next["offset"],
            &next["limit"]
        ),
        (
            vec!["ENC-2".into(), "ENC-0".into()],
            &json!(4),
            &json!(2),
            &json!(2)
        ),
        "the second page"
    );
    assert_eq!(all["limit"], 100, "a page of 100 rows unless asked");
    let bad = b
        .http
        .get(format!("{}{delays}?offset=-1", b.base))
        .bearer_auth(&trust)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let cc = get(&b, &format!("{delays}?site=RX1CC"), &trust).await;
    assert_eq!(
        (encounters(&cc), &cc["total"]),
        (vec!["ENC-5".into(), "ENC-0".into()], &json!(2))
    );
    assert_eq!(
        get(&b, delays, &council).await["total"],
        4,
        "the responsible council sees them"
    );
    assert_eq!(
        get(&b, delays, &token_for(Role::DischargeTeam, "RR8")).await["total"],
        0,
        "another trust sees none"
    );

    // Brokerage: packages not started; people delayed in hospital first (2 and 0, by
    // required start), then people in hospital (3, not yet past their DRD), then people
    // not in hospital (4, discharged).
    let q = get(&b, "/v1/worklists/brokerage", &council).await;
    let packages: Vec<&str> = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["package_id"].as_str().unwrap())
        .collect();
    assert_eq!(packages, ["PKG-2", "PKG-0", "PKG-3", "PKG-4"]);
    assert_eq!(q["total"], 4);
    let q = get(&b, "/v1/worklists/brokerage?limit=1", &council).await;
    assert_eq!(
        (q["rows"].as_array().unwrap().len(), &q["total"]),
        (1, &json!(4))
    );
    let q = get(&b, "/v1/worklists/brokerage?limit=2&offset=3", &council).await;
    assert_eq!(
        (
            q["rows"][0]["package_id"].as_str(),
            q["rows"].as_array().unwrap().len(),
            &q["total"]
        ),
        (Some("PKG-4"), 1, &json!(4)),
        "the last page"
    );
    let other = token_for(Role::Broker, "E08000032");
    assert_eq!(get(&b, "/v1/worklists/brokerage", &other).await["total"], 0);

    // Without the audit stream no page and no journey is answered: the records cannot be
    // stored (the answer is built while they are in flight, and then thrown away).
    let journey = format!("/v1/persons/{}/journey", nhs[2]);
    let r = b
        .http
        .get(format!("{}{journey}", b.base))
        .bearer_auth(&council)
        .header("handover-access-reason", "direct-care")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "before the audit stream is gone");
    let nats = async_nats::connect(b.nats.url()).await.unwrap();
    async_nats::jetstream::new(nats)
        .delete_stream("HANDOVER_AUDIT")
        .await
        .unwrap();
    for path in [delays, "/v1/worklists/brokerage", &journey] {
        let r = b
            .http
            .get(format!("{}{path}", b.base))
            .bearer_auth(&council)
            .header("handover-access-reason", "direct-care")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_in_hospital_at_two_trusts_is_on_both_trusts_worklists() {
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let day = |offset: i64| (today + Days::days(offset)).format("%Y-%m-%d").to_string();
    let at = |offset: i64| format!("{}T09:00:00Z", day(offset));
    let nhs = nhs_numbers(943_500_000, 1).remove(0);
    let stay = |trust: &str, enc: &str, admitted: i64, drd: i64| {
        let source = format!("urn:ods:{trust}:pas");
        vec![
            ev(
                &format!("{enc}-a"),
                &source,
                "discharge.admitted",
                &nhs,
                &at(admitted),
                json!({"encounter_id": enc, "site": format!("{trust}01"), "admitted_at": at(admitted), "responsible_council": "E08000035"}),
            ),
            ev(
                &format!("{enc}-d"),
                &source,
                "discharge.ready-date-recorded",
                &nhs,
                &at(drd),
                json!({"encounter_id": enc, "discharge_ready_date": day(drd)}),
            ),
        ]
    };
    // Delayed at RX1 for nine days; then admitted at RR8 (its discharge from RX1 never
    // came), delayed there for two.
    let mut events = stay("RX1", "RX1-V1", -20, -9);
    events.extend(stay("RR8", "RR8-V7", -5, -2));
    let r = b.post_events(&Value::Array(events)).await;
    assert_eq!(r.status(), 202);
    b.caught_up().await;
    let rows_of = |org: &str| {
        let token = token_for(Role::DischargeTeam, org);
        let b = &b;
        async move { get(b, "/v1/worklists/discharge-delays", &token).await }
    };
    let rx1 = rows_of("RX1").await;
    assert_eq!(encounters(&rx1), ["RX1-V1"], "{rx1:#}");
    assert_eq!(rx1["rows"][0]["days_delayed"], 9, "{rx1:#}");
    let rr8 = rows_of("RR8").await;
    assert_eq!(encounters(&rr8), ["RR8-V7"], "{rr8:#}");
    // The council sees both stays, the longest delayed first.
    let council = get(
        &b,
        "/v1/worklists/discharge-delays",
        &token_for(Role::SocialWorker, "E08000035"),
    )
    .await;
    assert_eq!(encounters(&council), ["RX1-V1", "RR8-V7"], "{council:#}");
    assert_eq!(council["total"], 2);
    // And filtered, by site.
    let filtered = get(
        &b,
        "/v1/worklists/discharge-delays?site=RR801",
        &token_for(Role::SocialWorker, "E08000035"),
    )
    .await;
    assert_eq!(encounters(&filtered), ["RR8-V7"], "{filtered:#}");
    // RX1 discharges them: only RR8's row is left.
    let r = b
        .post_events(&json!(ev(
            "RX1-V1-x",
            "urn:ods:RX1:pas",
            "discharge.discharged",
            &nhs,
            &at(-1),
            json!({"encounter_id": "RX1-V1", "discharged_at": at(-1)}),
        )))
        .await;
    assert_eq!(r.status(), 202);
    b.caught_up().await;
    let council = get(
        &b,
        "/v1/worklists/discharge-delays",
        &token_for(Role::SocialWorker, "E08000035"),
    )
    .await;
    assert_eq!(encounters(&council), ["RR8-V7"], "{council:#}");
    assert!(encounters(&rows_of("RX1").await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_known_only_locally_is_named_and_audited_and_a_councils_own_request_is_queued() {
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let day = |offset: i64| (today + Days::days(offset)).format("%Y-%m-%d").to_string();
    let at = |offset: i64| format!("{}T09:00:00Z", day(offset));
    // A stay from a PAS that had no NHS number for the patient: events name them by MRN.
    let mrn = json!({"system": "https://rx1.nhs.uk/id/mrn", "value": "RX1-LOCAL-1"});
    let local = |id: &str, ty: &str, time: String, mut data: Value| {
        data["local_id"] = mrn.clone();
        json!({"specversion": "1.0", "id": id, "source": PAS, "type": format!("handover.{ty}.v1"),
               "time": time, "data": data})
    };
    // And a package the council's own system asked for: no referral, no hospital stay.
    let mosaic = json!({"system": "urn:gss:E08000035:mosaic", "value": "M-4471"});
    let nhs = nhs_numbers(943_700_000, 1).remove(0);
    let events = json!([
        local(
            "l1",
            "discharge.admitted",
            at(-6),
            json!({"encounter_id": "ENC-L", "site": "RX1CC", "admitted_at": at(-6), "responsible_council": "E08000035"})
        ),
        local(
            "l2",
            "discharge.ready-date-recorded",
            at(-3),
            json!({"encounter_id": "ENC-L", "discharge_ready_date": day(-3)})
        ),
        ev(
            "c1",
            BROKERAGE,
            "care-package.requested",
            &nhs,
            &at(-1),
            json!({"package_id": "PKG-SELF", "service_type": "home-care", "required_start": day(2)})
        ),
        // ...and one for someone the council knows only by its own case number.
        json!({"specversion": "1.0", "id": "c2", "source": BROKERAGE,
               "type": "handover.care-package.requested.v1", "time": at(-1),
               "data": {"package_id": "PKG-LOCAL", "service_type": "home-care", "required_start": day(3),
                        "local_id": mosaic}}),
    ]);
    assert_eq!(b.post_events(&events).await.status(), 202);
    b.caught_up().await;

    let team = token_for(Role::DischargeTeam, "RX1");
    let w = get(&b, "/v1/worklists/discharge-delays", &team).await;
    assert_eq!(w["total"], 1);
    let person = &w["rows"][0]["person"];
    assert!(person["nhs_number"].is_null());
    assert_eq!(
        person["local_id"], mrn,
        "the team can tell whom the row is about"
    );
    // A broker sees the row but not the local record number; the read is audited all the same.
    let broker = token_for(Role::Broker, "E08000035");
    let w = get(&b, "/v1/worklists/discharge-delays", &broker).await;
    assert_eq!(w["total"], 1);
    assert!(w["rows"][0]["person"]["local_id"].is_null());

    let auditor = token_for(Role::Auditor, "RX1");
    for user in ["test-discharge-team-RX1", "test-broker-E08000035"] {
        let a = get(&b, &format!("/v1/audit?user={user}"), &auditor).await;
        assert_eq!(a["count"], 1, "{user}: {a}");
        let r = &a["records"][0];
        assert_eq!(r["action"], "worklist:discharge-delays");
        assert_eq!(r["nhs_number"], "");
        assert_eq!(r["local_id"], mrn, "{user}");
    }

    // The council's own request is on its brokerage queue, though no referral or stay
    // names the council.
    let q = get(&b, "/v1/worklists/brokerage", &broker).await;
    let packages: Vec<&str> = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["package_id"].as_str().unwrap())
        .collect();
    assert_eq!(packages, ["PKG-SELF", "PKG-LOCAL"]);
    assert_eq!(q["rows"][0]["council"], "E08000035");
    // A broker sees their own council's case number (not a hospital's record number):
    // without it the row would name no one.
    assert_eq!(q["rows"][1]["person"]["local_id"], mosaic);
    let other = get(
        &b,
        "/v1/worklists/brokerage",
        &token_for(Role::SocialWorker, "E08000035"),
    )
    .await;
    assert_eq!(other["rows"][1]["person"]["local_id"], mosaic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_measures_answer_for_their_period_and_refuse_a_period_they_cannot_count() {
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let day = |offset: i64| (today + Days::days(offset)).format("%Y-%m-%d").to_string();
    let at = |offset: i64| format!("{}T09:00:00Z", day(offset));
    let nhs = nhs_numbers(943_200_000, 2);
    let mut events = Vec::new();
    // Person 0 is in hospital 6 days past their DRD; person 1 had no responsible council
    // named: Bradford declined the referral and Leeds took the next, 4 days past the DRD.
    for (i, council) in [(0, Some("E08000035")), (1, None)] {
        let mut admitted = json!({"encounter_id": format!("ENC-{i}"), "site": "RX1CC",
                                  "admitted_at": at(-20)});
        if let Some(c) = council {
            admitted["responsible_council"] = json!(c);
        }
        events.push(ev(
            &format!("{i}-a"),
            PAS,
            "discharge.admitted",
            &nhs[i],
            &at(-20),
            admitted,
        ));
        events.push(ev(
            &format!("{i}-r"),
            PAS,
            "discharge.ready-date-recorded",
            &nhs[i],
            &at(-19),
            json!({"encounter_id": format!("ENC-{i}"), "discharge_ready_date": day(if i == 0 { -6 } else { -4 })}),
        ));
    }
    for (id, council, offset) in [("R1", "E08000032", -5), ("R2", "E08000035", -3)] {
        events.push(ev(
            &format!("{id}-s"),
            PAS,
            "referral.sent",
            &nhs[1],
            &at(offset),
            json!({"referral_id": id, "from_org": "RX1", "to_council": council, "encounter_id": "ENC-1"}),
        ));
    }
    events.push(ev(
        "R1-d",
        "urn:gss:E08000032:case",
        "referral.declined",
        &nhs[1],
        &at(-4),
        json!({"referral_id": "R1", "reason": "not ordinarily resident"}),
    ));
    let r = b.post_events(&Value::Array(events)).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    b.caught_up().await;

    let manager = token_for(Role::Admin, "RX1");
    let flow = |q: &str| format!("/v1/measures/flow{q}");
    let all = get(&b, &flow(""), &manager).await;
    assert_eq!(
        (&all["delayed_now"], &all["delayed_bed_days"]),
        (&json!(2), &json!(10))
    );
    assert_eq!(all["to"], json!(day(0)));
    assert_eq!(all["from"], json!(day(-27)), "the 28 days up to today");
    // the worklist and the measures charge person 1's delay to Leeds, not Bradford
    let leeds = get(&b, &flow("?council=E08000035"), &manager).await;
    assert_eq!(leeds["delayed_bed_days"], 10);
    let bradford = get(&b, &flow("?council=E08000032"), &manager).await;
    assert_eq!(bradford["delayed_bed_days"], 0);
    let rows = get(
        &b,
        "/v1/worklists/discharge-delays",
        &token_for(Role::SocialWorker, "E08000035"),
    )
    .await;
    let councils: Vec<&Value> = rows["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["council"])
        .collect();
    assert_eq!(councils, [&json!("E08000035"), &json!("E08000035")]);
    let week = get(
        &b,
        &flow(&format!("?from={}&to={}", day(-5), day(-1))),
        &manager,
    )
    .await;
    assert_eq!(
        week["delayed_bed_days"],
        5 + 4,
        "days -5..-1 for person 0, -4..-1 for person 1"
    );

    for (q, says) in [
        (
            "?to=-262143-01-05",
            "query parameter to must be a date YYYY-MM-DD",
        ),
        (
            "?from=%2B2026-11-01",
            "query parameter from must be a date YYYY-MM-DD",
        ),
        (
            "?from=2026-11-1",
            "query parameter from must be a date YYYY-MM-DD",
        ),
        (
            "?from=1800-01-01&to=1800-02-01",
            "between 1900-01-01 and 2199-12-31",
        ),
        ("?from=1900-01-01", "the period may be at most ten years"),
        ("?from=2199-01-01", "from must not be after to (to is"),
        (
            "?from=2026-02-01&to=2026-01-01",
            "from must not be after to",
        ),
    ] {
        let r = b
            .http
            .get(format!("{}{}", b.base, flow(q)))
            .bearer_auth(&manager)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{q}"
        );
        let p: Value = r.json().await.unwrap();
        assert!(p["detail"].as_str().unwrap().contains(says), "{q}: {p}");
    }
}
