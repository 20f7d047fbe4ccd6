//! Publish → project → query: a whole discharge journey, every field asserted.

use handover_api::Role;
use serde_json::{json, Value};

use crate::support::{ev, token, Backbone};

const NHS: &str = "9434765919";
const PAS: &str = "urn:ods:RX1:pas";
const LEEDS: &str = "urn:gss:E08000035:mosaic";
const BROKERAGE: &str = "urn:gss:E08000035:brokerage";

fn full_journey() -> Vec<Value> {
    vec![
        ev(
            "a1",
            PAS,
            "person.identified",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"nhs_number_status":"01","local_ids":[{"system":"https://rx1.nhs.uk/id/mrn","value":"RX1-100123"}],"given_name":"Jane","family_name":"Example","birth_date":"1941-03-12","postcode":"LS1 1AA","gp_practice":"B86001"}),
        ),
        ev(
            "a2",
            PAS,
            "discharge.admitted",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id":"RX1-ENC-0042","site":"RX1CC","ward":"AMU","admitted_at":"2026-11-02T09:14:00Z","admission_method":"emergency","responsible_council":"E08000035"}),
        ),
        ev(
            "a3",
            PAS,
            "discharge.transferred",
            NHS,
            "2026-11-03T11:00:00Z",
            json!({"encounter_id":"RX1-ENC-0042","ward":"Ward 7","previous_ward":"AMU"}),
        ),
        ev(
            "a4",
            PAS,
            "discharge.ready-date-recorded",
            NHS,
            "2026-11-05T10:00:00Z",
            json!({"encounter_id":"RX1-ENC-0042","discharge_ready_date":"2026-11-05"}),
        ),
        ev(
            "a5",
            PAS,
            "discharge.pathway-assigned",
            NHS,
            "2026-11-05T10:05:00Z",
            json!({"encounter_id":"RX1-ENC-0042","pathway":1}),
        ),
        ev(
            "a6",
            PAS,
            "discharge.expected-date-set",
            NHS,
            "2026-11-05T10:06:00Z",
            json!({"encounter_id":"RX1-ENC-0042","expected_discharge_date":"2026-11-08"}),
        ),
        ev(
            "a7",
            PAS,
            "referral.sent",
            NHS,
            "2026-11-05T11:00:00Z",
            json!({"referral_id":"REF-1","to_council":"E08000035","from_org":"RX1","encounter_id":"RX1-ENC-0042","reason":"support with personal care","urgency":"urgent","proposed_discharge_date":"2026-11-08","consent_obtained":true,"safeguarding_concern":false,"carer_involved":true}),
        ),
        ev(
            "c1",
            LEEDS,
            "referral.accepted",
            NHS,
            "2026-11-05T14:00:00Z",
            json!({"referral_id":"REF-1","team":"Hospital Social Work Team"}),
        ),
        ev(
            "c2",
            LEEDS,
            "referral.assessment-completed",
            NHS,
            "2026-11-06T12:00:00Z",
            json!({"referral_id":"REF-1","assessment_type":"needs","outcome":"eligible"}),
        ),
        ev(
            "b1",
            BROKERAGE,
            "care-package.requested",
            NHS,
            "2026-11-06T13:00:00Z",
            json!({"package_id":"PKG-1","service_type":"reablement","referral_id":"REF-1","hours_per_week":10.5,"calls_per_day":3,"carers_per_call":1,"required_start":"2026-11-08"}),
        ),
        ev(
            "a8",
            PAS,
            "discharge.delay-recorded",
            NHS,
            "2026-11-07T09:00:00Z",
            json!({"encounter_id":"RX1-ENC-0042","reason":"awaiting-reablement","attributed_to":"council","note":"no reablement capacity"}),
        ),
        ev(
            "b2",
            BROKERAGE,
            "care-package.sourced",
            NHS,
            "2026-11-08T10:00:00Z",
            json!({"package_id":"PKG-1","provider":"1-101234567","agreed_start":"2026-11-10"}),
        ),
        ev(
            "a9",
            PAS,
            "discharge.discharged",
            NHS,
            "2026-11-10T11:30:00Z",
            json!({"encounter_id":"RX1-ENC-0042","discharged_at":"2026-11-10T11:30:00Z","method":1,"destination":"usual-residence","pathway":1}),
        ),
        ev(
            "b3",
            BROKERAGE,
            "care-package.started",
            NHS,
            "2026-11-10T15:00:00Z",
            json!({"package_id":"PKG-1","started_on":"2026-11-10"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_discharge_journey_round_trips_with_every_field() {
    let b = Backbone::start().await;
    let resp = b.post_events(&Value::Array(full_journey())).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["accepted"], 14);
    assert_eq!(body["duplicates"], 0);
    b.caught_up().await;

    let resp = b.journey(NHS).await;
    assert_eq!(resp.status(), 200);
    let j: Value = resp.json().await.unwrap();
    assert_eq!(j["nhs_number"], NHS);
    assert_eq!(
        j["identity"],
        json!({"nhs_number_status":"01","local_ids":[{"system":"https://rx1.nhs.uk/id/mrn","value":"RX1-100123"}],
               "given_name":"Jane","family_name":"Example","birth_date":"1941-03-12","postcode":"LS1 1AA","gp_practice":"B86001","previous_nhs_numbers":[]})
    );
    assert_eq!(
        j["current_stay"],
        json!({"encounter_id":"RX1-ENC-0042","status":"discharged","source":PAS,"site":"RX1CC","ward":"Ward 7",
               "admitted_at":"2026-11-02T09:14:00Z","admission_method":"emergency","responsible_council":"E08000035",
               "discharge_ready_date":"2026-11-05","pathway":1,"expected_discharge_date":"2026-11-08",
               "latest_delay":{"reason":"awaiting-reablement","attributed_to":"council","note":"no reablement capacity","recorded_at":"2026-11-07T09:00:00Z"},
               "discharged_at":"2026-11-10T11:30:00Z","discharge_method":1,"destination":"usual-residence","days_delayed":5})
    );
    assert_eq!(j["stays"].as_array().unwrap().len(), 1);
    assert_eq!(
        j["referrals"],
        json!([{"referral_id":"REF-1","status":"accepted","to_council":"E08000035","from_org":"RX1","encounter_id":"RX1-ENC-0042",
                "reason":"support with personal care","urgency":"urgent","proposed_discharge_date":"2026-11-08","consent_obtained":true,
                "safeguarding_concern":false,"carer_involved":true,"sent_at":"2026-11-05T11:00:00Z","responded_at":"2026-11-05T14:00:00Z",
                "team":"Hospital Social Work Team","assessments":[{"assessment_type":"needs","outcome":"eligible","completed_at":"2026-11-06T12:00:00Z"}]}])
    );
    assert_eq!(
        j["care_packages"],
        json!([{"package_id":"PKG-1","status":"started","service_type":"reablement","referral_id":"REF-1","hours_per_week":10.5,
                "calls_per_day":3,"carers_per_call":1,"required_start":"2026-11-08","provider":"1-101234567","agreed_start":"2026-11-10",
                "started_on":"2026-11-10","requested_at":"2026-11-06T13:00:00Z","requested_by":"E08000035"}])
    );
    let timeline = j["timeline"].as_array().unwrap();
    let ids: Vec<&str> = timeline.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "c1", "c2", "b1", "a8", "b2", "a9", "b3"]
    );
    assert_eq!(timeline[7]["organisation"], "E08000035");
    assert_eq!(timeline[7]["sector"], "council");
    assert_eq!(timeline[0]["organisation"], "RX1");
    assert_eq!(timeline[0]["sector"], "nhs");
    assert_eq!(timeline[12]["type"], "handover.discharge.discharged.v1");
    assert_eq!(timeline[12]["data"]["destination"], "usual-residence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_arrival_gives_the_same_state() {
    let in_order = full_journey();
    let mut shuffled = in_order.clone();
    // discharged first, admission last: each in its own request so arrival order is fixed
    shuffled.reverse();
    let b = Backbone::start().await;
    for e in &shuffled {
        assert_eq!(b.post_events(e).await.status(), 202);
    }
    b.caught_up().await;
    let late: Value = b.journey(NHS).await.json().await.unwrap();

    let b2 = Backbone::start().await;
    assert_eq!(b2.post_events(&Value::Array(in_order)).await.status(), 202);
    b2.caught_up().await;
    let timely: Value = b2.journey(NHS).await.json().await.unwrap();

    assert_eq!(late["current_stay"]["status"], "discharged");
    assert_eq!(late["current_stay"]["site"], "RX1CC");
    assert_eq!(late["current_stay"]["ward"], "Ward 7");
    for k in [
        "identity",
        "current_stay",
        "stays",
        "referrals",
        "care_packages",
    ] {
        assert_eq!(
            late[k], timely[k],
            "{k} differs when events arrive out of order"
        );
    }
    // The timeline is in event-time order; events with the same time keep arrival order.
    let ids = |j: &Value| {
        let mut v: Vec<(String, String)> = j["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["time"].as_str().unwrap().to_string(),
                    e["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let times: Vec<String> = v.iter().map(|(t, _)| t.clone()).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "timeline not in time order: {times:?}"
        );
        v.sort();
        v
    };
    assert_eq!(ids(&late), ids(&timely));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_reads_are_checked() {
    let b = Backbone::start().await;
    assert_eq!(
        b.post_events(&Value::Array(full_journey())).await.status(),
        202
    );
    b.caught_up().await;
    let url = format!("{}/v1/persons/{NHS}/journey", b.base);
    let get = |tok: Option<String>, reason: Option<&str>| {
        let mut r = b.http.get(&url);
        if let Some(t) = tok {
            r = r.bearer_auth(t);
        }
        if let Some(why) = reason {
            r = r.header("handover-access-reason", why);
        }
        r.send()
    };
    let r = get(None, Some("direct-care")).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        get(Some("wrong".into()), Some("direct-care"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(Some(token(Role::Integration)), Some("direct-care"))
            .await
            .unwrap()
            .status(),
        403
    );
    let r = get(Some(token(Role::Broker)), None).await.unwrap();
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/access-reason-required"
    );
    assert_eq!(
        get(Some(token(Role::Broker)), Some("curiosity"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get(Some(token(Role::Broker)), Some("safeguarding"))
            .await
            .unwrap()
            .status(),
        200
    );

    let r = b.journey("9434765918").await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/invalid-nhs-number"
    );
    assert!(p["detail"].as_str().unwrap().contains("check digit"));
    assert_eq!(b.journey("9434765870").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_local_ids_and_merged_nhs_numbers_join_the_journey() {
    let b = Backbone::start().await;
    let old = "9434765870";
    let council_person = json!({"system": "urn:gss:E08000035:mosaic:person", "value": "MOS-55102"});
    let mut accepted = ev(
        "c1",
        LEEDS,
        "referral.accepted",
        NHS,
        "2026-11-05T14:00:00Z",
        json!({"referral_id":"REF-1","local_id": council_person}),
    );
    accepted.as_object_mut().unwrap().remove("subject");
    let events = vec![
        // the council knows only its own id at first
        accepted,
        ev(
            "a2",
            PAS,
            "discharge.admitted",
            old,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-02T09:14:00Z"}),
        ),
        ev(
            "c2",
            LEEDS,
            "person.linked",
            NHS,
            "2026-11-06T09:00:00Z",
            json!({"local_id": council_person}),
        ),
        ev(
            "a3",
            PAS,
            "person.nhs-number-changed",
            NHS,
            "2026-11-07T09:00:00Z",
            json!({"previous_nhs_number": old}),
        ),
        ev(
            "a4",
            PAS,
            "discharge.ready-date-recorded",
            old,
            "2026-11-07T10:00:00Z",
            json!({"encounter_id":"E1","discharge_ready_date":"2026-11-07"}),
        ),
    ];
    for e in &events {
        assert_eq!(b.post_events(e).await.status(), 202);
    }
    b.caught_up().await;
    let j: Value = b.journey(NHS).await.json().await.unwrap();
    assert_eq!(j["referrals"][0]["status"], "accepted");
    assert_eq!(j["current_stay"]["encounter_id"], "E1");
    assert_eq!(j["current_stay"]["discharge_ready_date"], "2026-11-07");
    assert_eq!(j["identity"]["previous_nhs_numbers"], json!([old]));
    assert_eq!(j["timeline"].as_array().unwrap().len(), 5);
    // the old number leads to the merged journey
    let via_old: Value = b.journey(old).await.json().await.unwrap();
    assert_eq!(via_old["nhs_number"], NHS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_naming_both_the_nhs_number_and_a_local_id_links_them() {
    // A council export's row that carries the NHS number and the council's person id: the
    // council's earlier events, known only by its id, join the NHS number's journey, and
    // its later local-only events follow them there.
    let b = Backbone::start().await;
    let council_person = json!({"system": "urn:gss:E08000035:mosaic:person", "value": "MOS-77"});
    let local_only = |id: &str, ty: &str, time: &str, data: Value| {
        let mut e = ev(id, LEEDS, ty, NHS, time, data);
        e.as_object_mut().unwrap().remove("subject");
        e
    };
    let events = vec![
        local_only(
            "c1",
            "referral.accepted",
            "2026-11-05T14:00:00Z",
            json!({"referral_id": "REF-7", "local_id": council_person}),
        ),
        ev(
            "a1",
            PAS,
            "discharge.admitted",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id": "E7", "site": "RX1CC", "admitted_at": "2026-11-02T09:14:00Z"}),
        ),
        // both ways
        ev(
            "c2",
            LEEDS,
            "care-package.requested",
            NHS,
            "2026-11-06T09:00:00Z",
            json!({"package_id": "PKG-7", "service_type": "home-care", "referral_id": "REF-7",
                   "local_id": council_person}),
        ),
        local_only(
            "c3",
            "care-package.sourced",
            "2026-11-07T09:00:00Z",
            json!({"package_id": "PKG-7", "provider": "1-000000001", "local_id": council_person}),
        ),
    ];
    for e in &events {
        assert_eq!(b.post_events(e).await.status(), 202);
    }
    b.caught_up().await;
    let j: Value = b.journey(NHS).await.json().await.unwrap();
    assert_eq!(j["referrals"][0]["referral_id"], "REF-7");
    assert_eq!(j["referrals"][0]["status"], "accepted");
    assert_eq!(j["care_packages"][0]["status"], "sourced");
    assert_eq!(j["identity"]["local_ids"], json!([council_person]));
    assert_eq!(j["timeline"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_id_asserted_for_two_nhs_numbers_never_merges_their_journeys() {
    let b = Backbone::start().await;
    let other = "9434765870";
    let mrn = json!({"system": "urn:ods:RX1:mrn", "value": "100200"});
    let identified = |id: &str, nhs: &str, time: &str| {
        ev(
            id,
            PAS,
            "person.identified",
            nhs,
            time,
            json!({"nhs_number_status": "01", "local_ids": [mrn.clone()]}),
        )
    };
    let admitted = |id: &str, nhs: &str, enc: &str, time: &str| {
        ev(
            id,
            PAS,
            "discharge.admitted",
            nhs,
            time,
            json!({"encounter_id": enc, "site": "RX1CC", "admitted_at": time}),
        )
    };
    let mut local_only = ev(
        "c1",
        LEEDS,
        "referral.accepted",
        NHS,
        "2026-11-06T10:00:00Z",
        json!({"referral_id": "REF-9", "local_id": mrn.clone()}),
    );
    local_only.as_object_mut().unwrap().remove("subject");
    let events = [
        identified("a1", NHS, "2026-11-02T09:00:00Z"),
        admitted("a2", NHS, "ENC-A", "2026-11-02T09:00:00Z"),
        // The same local id, later asserted for another NHS number.
        identified("b1", other, "2026-11-04T09:00:00Z"),
        admitted("b2", other, "ENC-B", "2026-11-04T09:00:00Z"),
        // An event known only by the local id now belongs to its latest holder.
        local_only,
    ];
    for e in &events {
        assert_eq!(b.post_events(e).await.status(), 202);
    }
    b.caught_up().await;
    let a: Value = b.journey(NHS).await.json().await.unwrap();
    let o: Value = b.journey(other).await.json().await.unwrap();
    assert_eq!(a["nhs_number"], NHS);
    assert_eq!(o["nhs_number"], other);
    let stays = |j: &Value| -> Vec<String> {
        j["stays"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["encounter_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(stays(&a), ["ENC-A"]);
    assert_eq!(stays(&o), ["ENC-B"]);
    let ids = |j: &Value| -> Vec<String> {
        j["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&a), ["a1", "a2"]);
    assert_eq!(ids(&o), ["b1", "b2", "c1"]);
    assert!(a["referrals"].as_array().unwrap().is_empty());
    assert_eq!(o["referrals"][0]["referral_id"], "REF-9");
}
