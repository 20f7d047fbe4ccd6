//! Information governance: authentication on every route, roles, organisation scoping,
//! field minimisation, reasons for access, the durable access audit, producer
//! authorisation, and no identifiers in logs, metrics or subjects.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use handover_api::Role;
use serde_json::{json, Value};

use crate::support::{ev, token, token_for, Backbone};

const NHS: &str = "9434765919";
const PAS: &str = "urn:ods:RX1:pas";
const LEEDS: &str = "urn:gss:E08000035:mosaic";

fn journey_events() -> Value {
    json!([
        ev(
            "g1",
            PAS,
            "person.identified",
            NHS,
            "2026-11-02T09:00:00Z",
            json!({"nhs_number_status":"01","local_ids":[{"system":"https://rx1.nhs.uk/id/mrn","value":"RX1-100123"}],"given_name":"Jane","family_name":"Example","gp_practice":"B86001","postcode":"LS1 1AA"})
        ),
        ev(
            "g2",
            PAS,
            "discharge.admitted",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id":"E1","site":"RX1CC","ward":"Ward 7","admitted_at":"2026-11-02T09:14:00Z","responsible_council":"E08000035"})
        ),
        ev(
            "g3",
            PAS,
            "discharge.ready-date-recorded",
            NHS,
            "2026-11-04T10:00:00Z",
            json!({"encounter_id":"E1","discharge_ready_date":"2026-11-04"})
        ),
        ev(
            "g4",
            PAS,
            "discharge.delay-recorded",
            NHS,
            "2026-11-05T10:00:00Z",
            json!({"encounter_id":"E1","reason":"awaiting-care-package","attributed_to":"council","note":"family report falls at night"})
        ),
        ev(
            "g5",
            PAS,
            "referral.sent",
            NHS,
            "2026-11-04T11:00:00Z",
            json!({"referral_id":"R1","to_council":"E08000035","from_org":"RX1","encounter_id":"E1","reason":"frailty after hip fracture","safeguarding_concern":true})
        ),
        ev(
            "g6",
            LEEDS,
            "referral.accepted",
            NHS,
            "2026-11-04T15:00:00Z",
            json!({"referral_id":"R1"})
        ),
        ev(
            "g7",
            "urn:gss:E08000035:brokerage",
            "care-package.requested",
            NHS,
            "2026-11-05T12:00:00Z",
            json!({"package_id":"P1","service_type":"home-care","referral_id":"R1"})
        ),
    ])
}

async fn loaded() -> Backbone {
    let b = Backbone::start().await;
    assert_eq!(b.post_events(&journey_events()).await.status(), 202);
    b.caught_up().await;
    b
}

async fn get(
    b: &Backbone,
    path: &str,
    tok: Option<&str>,
    reason: Option<&str>,
) -> reqwest::Response {
    let mut r = b.http.get(format!("{}{path}", b.base));
    if let Some(t) = tok {
        r = r.bearer_auth(t);
    }
    if let Some(why) = reason {
        r = r.header("handover-access-reason", why);
    }
    r.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_token_and_the_right_role() {
    let b = loaded().await;
    let journey = format!("/v1/persons/{NHS}/journey");
    for path in [
        journey.as_str(),
        "/v1/worklists/discharge-delays",
        "/v1/worklists/brokerage",
        "/v1/measures/flow",
        "/v1/audit?user=x",
    ] {
        let r = get(&b, path, None, Some("direct-care")).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"handover\"");
        let r = get(&b, path, Some("not-a-token"), Some("direct-care")).await;
        assert_eq!(r.status(), 401, "{path}");
        // A token that is wrong, not missing: RFC 6750's invalid_token.
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer realm=\"handover\", error=\"invalid_token\""),
            "{path}"
        );
    }
    // The scheme is case-insensitive (RFC 9110 section 11.1); another scheme is no token.
    for (scheme, status) in [("BEARER", 200), ("bearer", 200), ("Basic", 401)] {
        let r = b
            .http
            .get(format!("{}/v1/worklists/discharge-delays", b.base))
            .header(
                "authorization",
                format!("{scheme} {}", token_for(Role::DischargeTeam, "RX1")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{scheme}");
    }
    for (path, method) in [
        ("/v1/events", "POST"),
        ("/fhir/r4/Patient", "POST"),
        ("/fhir/r4", "POST"),
    ] {
        let r = b
            .http
            .request(method.parse().unwrap(), format!("{}{path}", b.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    // The web UI sends people without a session to sign in.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for path in [
        "/ui/delays",
        "/ui/brokerage",
        "/ui/measures",
        &format!("/ui/persons/{NHS}?reason=direct-care"),
    ] {
        let r = no_redirect
            .get(format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/ui/login");
    }
    // Wrong role: 403
    let integration = token(Role::Integration);
    let auditor = token(Role::Auditor);
    let admin = token(Role::Admin);
    for (path, tok) in [
        (journey.as_str(), &integration),
        (journey.as_str(), &auditor),
        (journey.as_str(), &admin),
        ("/v1/worklists/discharge-delays", &integration),
        ("/v1/worklists/brokerage", &admin),
        ("/v1/measures/flow", &integration),
        ("/v1/audit?user=x", &token(Role::DischargeTeam)),
    ] {
        let r = get(&b, path, Some(tok), Some("direct-care")).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Broker))
        .header("content-type", "application/cloudevents-batch+json")
        .body(journey_events().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_see_only_people_they_have_a_relationship_with() {
    let b = loaded().await;
    let path = format!("/v1/persons/{NHS}/journey");
    // the trust that reported the stay and the council responsible: yes
    assert_eq!(
        get(
            &b,
            &path,
            Some(&token_for(Role::DischargeTeam, "RX1")),
            Some("direct-care")
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        get(
            &b,
            &path,
            Some(&token_for(Role::SocialWorker, "E08000035")),
            Some("direct-care")
        )
        .await
        .status(),
        200
    );
    // another trust and another council: as if the person were unknown
    assert_eq!(
        get(
            &b,
            &path,
            Some(&token_for(Role::DischargeTeam, "RR8")),
            Some("direct-care")
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        get(
            &b,
            &path,
            Some(&token_for(Role::Broker, "E08000032")),
            Some("direct-care")
        )
        .await
        .status(),
        404
    );
    let rows = |tok: String| {
        let b = &b;
        async move {
            let v: Value = get(b, "/v1/worklists/discharge-delays", Some(&tok), None)
                .await
                .json()
                .await
                .unwrap();
            v["total"].as_u64().unwrap()
        }
    };
    assert_eq!(rows(token_for(Role::DischargeTeam, "RX1")).await, 1);
    assert_eq!(rows(token_for(Role::Broker, "E08000035")).await, 1);
    assert_eq!(rows(token_for(Role::DischargeTeam, "RR8")).await, 0);
    assert_eq!(rows(token_for(Role::Broker, "E08000032")).await, 0);
    let q: Value = get(
        &b,
        "/v1/worklists/brokerage",
        Some(&token_for(Role::Broker, "E08000032")),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(q["total"], 0);
    let q: Value = get(
        &b,
        "/v1/worklists/brokerage",
        Some(&token_for(Role::Broker, "E08000035")),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(q["total"], 1);

    // The audit follows the same need to know. A person only the council knows, read by
    // its broker: the council's auditor sees that read, the trust's does not (though it
    // sees the same broker's read of its own patient).
    let council_only = "9434765870";
    let request = ev(
        "g-co",
        "urn:gss:E08000035:brokerage",
        "care-package.requested",
        council_only,
        "2026-11-06T09:00:00Z",
        json!({"package_id": "P-CO", "service_type": "home-care"}),
    );
    assert_eq!(b.post_events(&request).await.status(), 202);
    b.caught_up().await;
    let broker = token_for(Role::Broker, "E08000035");
    for n in [council_only, NHS] {
        let r = get(
            &b,
            &format!("/v1/persons/{n}/journey"),
            Some(&broker),
            Some("direct-care"),
        )
        .await;
        assert_eq!(r.status(), 200, "{n}");
    }
    let read_by_broker = |auditor: String| {
        let b = &b;
        async move {
            let a: Value = get(
                b,
                "/v1/audit?user=test-broker-E08000035",
                Some(&auditor),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
            let mut people: Vec<String> = a["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["nhs_number"].as_str().unwrap().to_owned())
                .collect();
            // (the broker's worklist reads above are records of NHS too)
            people.sort();
            people.dedup();
            people
        }
    };
    assert_eq!(
        read_by_broker(token_for(Role::Auditor, "E08000035")).await,
        [council_only, NHS]
    );
    assert_eq!(read_by_broker(token_for(Role::Auditor, "RX1")).await, [NHS]);
    let a: Value = get(
        &b,
        &format!("/v1/audit?nhs_number={council_only}"),
        Some(&token_for(Role::Auditor, "RX1")),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(a["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_the_fields_the_policy_gives_it() {
    let b = loaded().await;
    // A link event carries a local record number in its data (`local_id`).
    let linked = ev(
        "g8",
        PAS,
        "person.linked",
        NHS,
        "2026-11-05T13:00:00Z",
        json!({"local_id":{"system":"https://rx1.nhs.uk/id/mrn","value":"RX1-LINKED-9"}}),
    );
    assert_eq!(b.post_events(&linked).await.status(), 202);
    // Free text on a closed referral and on a package's status change is no broker's
    // business either: it is as clinical as the reason for referral.
    let closures = json!([
        ev(
            "g9",
            PAS,
            "referral.sent",
            NHS,
            "2026-11-05T14:00:00Z",
            json!({"referral_id":"R2","to_council":"E08000035","from_org":"RX1"})
        ),
        ev(
            "g10",
            LEEDS,
            "referral.declined",
            NHS,
            "2026-11-05T15:00:00Z",
            json!({"referral_id":"R2","reason":"open s42 enquiry, abuse by a relative"})
        ),
        ev(
            "g11",
            "urn:gss:E08000035:brokerage",
            "care-package.suspended",
            NHS,
            "2026-11-05T16:00:00Z",
            json!({"package_id":"P1","reason":"admitted under s2 of the Mental Health Act"})
        ),
    ]);
    assert_eq!(b.post_events(&closures).await.status(), 202);
    b.caught_up().await;
    let path = format!("/v1/persons/{NHS}/journey");
    let full: Value = get(
        &b,
        &path,
        Some(&token(Role::DischargeTeam)),
        Some("direct-care"),
    )
    .await
    .json()
    .await
    .unwrap();
    let broker: Value = get(&b, &path, Some(&token(Role::Broker)), Some("direct-care"))
        .await
        .json()
        .await
        .unwrap();
    // discharge team: everything
    assert_eq!(full["current_stay"]["ward"], "Ward 7");
    assert_eq!(
        full["current_stay"]["latest_delay"]["note"],
        "family report falls at night"
    );
    assert_eq!(full["referrals"][0]["reason"], "frailty after hip fracture");
    assert_eq!(full["referrals"][0]["safeguarding_concern"], true);
    assert_eq!(full["identity"]["gp_practice"], "B86001");
    assert_eq!(full["identity"]["local_ids"].as_array().unwrap().len(), 2);
    assert!(full.to_string().contains("RX1-LINKED-9"));
    assert_eq!(
        full["referrals"][1]["closed_reason"],
        "open s42 enquiry, abuse by a relative"
    );
    assert_eq!(
        full["care_packages"][0]["status_reason"],
        "admitted under s2 of the Mental Health Act"
    );
    // broker: who, where they live, dates, status and care needs; not wards, clinical reasons or notes
    assert_eq!(broker["identity"]["family_name"], "Example");
    assert_eq!(broker["identity"]["postcode"], "LS1 1AA");
    assert_eq!(broker["current_stay"]["discharge_ready_date"], "2026-11-04");
    assert_eq!(
        broker["current_stay"]["latest_delay"]["reason"],
        "awaiting-care-package"
    );
    assert_eq!(broker["care_packages"][0]["service_type"], "home-care");
    for absent in [
        &broker["current_stay"]["ward"],
        &broker["current_stay"]["latest_delay"]["note"],
        &broker["referrals"][0]["reason"],
        &broker["referrals"][0]["safeguarding_concern"],
        &broker["referrals"][1]["closed_reason"],
        &broker["care_packages"][0]["status_reason"],
        &broker["identity"]["gp_practice"],
    ] {
        assert!(absent.is_null(), "broker sees {absent}");
    }
    assert_eq!(broker["identity"]["local_ids"], json!([]));
    let text = broker.to_string();
    for secret in [
        "family report falls",
        "hip fracture",
        "Ward 7",
        "RX1-100123",
        "RX1-LINKED-9",
        "B86001",
        "s42",
        "Mental Health Act",
    ] {
        assert!(
            !text.contains(secret),
            "broker's journey contains {secret:?}"
        );
    }
    // worklist rows follow the same policy
    let row: Value = get(
        &b,
        "/v1/worklists/discharge-delays",
        Some(&token(Role::Broker)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(row["rows"][0]["ward"].is_null());
    let row: Value = get(
        &b,
        "/v1/worklists/discharge-delays",
        Some(&token(Role::DischargeTeam)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(row["rows"][0]["ward"], "Ward 7");
    // A broker sees why a discharge is delayed, as a code, but not that the reason is a
    // safeguarding matter: that shows as `other`, everywhere a broker looks.
    let broker_timeline_reasons = |j: &Value| -> Vec<Value> {
        j["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "handover.discharge.delay-recorded.v1")
            .map(|e| e["data"]["reason"].clone())
            .collect()
    };
    assert_eq!(
        broker_timeline_reasons(&broker),
        vec![json!("awaiting-care-package")]
    );
    let safeguarding = ev(
        "g12",
        PAS,
        "discharge.delay-recorded",
        NHS,
        "2026-11-06T10:00:00Z",
        json!({"encounter_id":"E1","reason":"safeguarding","attributed_to":"joint"}),
    );
    assert_eq!(b.post_events(&safeguarding).await.status(), 202);
    b.caught_up().await;
    let read = |role: Role| {
        let path = path.clone();
        let b = &b;
        async move {
            get(b, &path, Some(&token(role)), Some("direct-care"))
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let (full, broker) = (read(Role::DischargeTeam).await, read(Role::Broker).await);
    assert_eq!(
        full["current_stay"]["latest_delay"]["reason"],
        "safeguarding"
    );
    assert_eq!(broker["current_stay"]["latest_delay"]["reason"], "other");
    assert_eq!(
        broker["current_stay"]["latest_delay"]["attributed_to"],
        "joint"
    );
    assert_eq!(
        broker_timeline_reasons(&broker),
        vec![json!("awaiting-care-package"), json!("other")]
    );
    assert!(!broker.to_string().contains("safeguarding"), "{broker}");
    for (role, reason) in [
        (Role::Broker, "other"),
        (Role::DischargeTeam, "safeguarding"),
    ] {
        let rows: Value = get(
            &b,
            "/v1/worklists/discharge-delays",
            Some(&token(role)),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(rows["rows"][0]["delay_reason"], reason, "{role:?}");
        assert!(
            role != Role::Broker || !rows.to_string().contains("safeguarding"),
            "{rows}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_is_audited_before_the_data_is_returned_and_survives_a_restart() {
    let mut b = loaded().await;
    let auditor = token(Role::Auditor);
    let audit = |query: String| {
        let b = &b;
        let auditor = auditor.clone();
        async move {
            let r = get(b, &format!("/v1/audit?{query}"), Some(&auditor), None).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(audit(format!("nhs_number={NHS}")).await["count"], 0);
    // refused reads are not accesses
    assert_eq!(
        get(
            &b,
            &format!("/v1/persons/{NHS}/journey"),
            Some(&token(Role::DischargeTeam)),
            None
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        audit("user=test-discharge-team-RX1".into()).await["count"],
        0
    );

    // (the reason is a token: its case is not part of it, and it is recorded as listed)
    let r = get(
        &b,
        &format!("/v1/persons/{NHS}/journey"),
        Some(&token(Role::DischargeTeam)),
        Some("Safeguarding"),
    )
    .await;
    assert_eq!(r.status(), 200);
    // the record is already there the moment the response is
    let a = audit("user=test-discharge-team-RX1".into()).await;
    assert_eq!(a["count"], 1);
    let rec = &a["records"][0];
    assert_eq!(rec["nhs_number"], NHS);
    assert_eq!(rec["user"], "test-discharge-team-RX1");
    assert_eq!(rec["organisation"], "RX1");
    assert_eq!(rec["role"], "discharge-team");
    assert_eq!(rec["reason"], "safeguarding");
    assert_eq!(rec["action"], "journey");
    assert_eq!(rec["from"], "127.0.0.1");
    // worklist rows are accesses too; a reason stated must be a lawful one (none means
    // direct care, the worklists' purpose), and nothing is shown or audited otherwise
    for path in ["/v1/worklists/discharge-delays", "/v1/worklists/brokerage"] {
        let r = get(&b, path, Some(&token(Role::Broker)), Some("just-browsing")).await;
        assert_eq!(r.status(), 403, "{path}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(
            p["type"],
            "https://handover.example.org/problems/access-reason-required"
        );
    }
    assert_eq!(audit("user=test-broker-E08000035".into()).await["count"], 0);
    let w: Value = get(
        &b,
        "/v1/worklists/discharge-delays",
        Some(&token(Role::Broker)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(w["total"], 1);
    let a = audit("user=test-broker-E08000035".into()).await;
    assert_eq!(a["records"][0]["action"], "worklist:discharge-delays");
    assert_eq!(a["records"][0]["reason"], "direct-care");

    // "who viewed my record": the auditor's first look, the discharge team, the broker;
    // each look by the auditor is recorded too, after its own answer
    let mine = audit(format!("nhs_number={NHS}")).await;
    let users: Vec<&str> = mine["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["user"].as_str().unwrap())
        .collect();
    assert_eq!(
        users,
        [
            "test-auditor-RX1",
            "test-discharge-team-RX1",
            "test-broker-E08000035"
        ]
    );
    assert_eq!(mine["records"][0]["action"], "audit");
    let again = audit(format!("nhs_number={NHS}")).await;
    assert_eq!(again["count"], 4);
    assert_eq!(again["records"][3]["action"], "audit");

    // restart the backbone: the audit is in JetStream, not in memory
    b.rt.take().unwrap().shutdown().await;
    b.start_runtime().await;
    let after: Value = get(
        &b,
        &format!("/v1/audit?nhs_number={NHS}"),
        Some(&token(Role::Auditor)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(after["count"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_may_assert_only_their_own_organisations_events() {
    let b = Backbone::start().await;
    let post = |tok: String, body: Value| {
        let b = &b;
        async move {
            b.http
                .post(format!("{}/v1/events", b.base))
                .bearer_auth(tok)
                .header("content-type", "application/cloudevents-batch+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    let admitted = |source: &str| {
        ev(
            "p1",
            source,
            "discharge.admitted",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-02T09:14:00Z"}),
        )
    };
    // a council's integration token asserting a hospital admission, under its own council source
    let r = post(
        token_for(Role::Integration, "E08000035"),
        json!([admitted("urn:gss:E08000035:mosaic")]),
    )
    .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/not-permitted"
    );
    assert_eq!(p["errors"][0]["pointer"], "/0/type");
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("a council source (urn:gss:…) may not assert handover.discharge.admitted.v1"));
    // … or pretending to be the hospital
    let r = post(
        token_for(Role::Integration, "E08000035"),
        json!([admitted(PAS)]),
    )
    .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["pointer"], "/0/source");
    assert!(p["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("organisation E08000035 may not publish as urn:ods:RX1:pas"));
    // the hospital's own token may; a hospital may not accept a referral on the council's behalf
    assert_eq!(
        post(token_for(Role::Integration, "RX1"), json!([admitted(PAS)]))
            .await
            .status(),
        202
    );
    let accept = ev(
        "p2",
        PAS,
        "referral.accepted",
        NHS,
        "2026-11-02T10:00:00Z",
        json!({"referral_id":"R1"}),
    );
    assert_eq!(
        post(token_for(Role::Integration, "RX1"), json!([accept]))
            .await
            .status(),
        403
    );
    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        1,
        "only the permitted event was stored"
    );
}

/// Everything written to the log by this test binary, captured once.
pub(crate) fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let w = W(buf.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("debug,hyper=info,reqwest=info,h2=info")
            .with_writer(move || w.clone())
            .try_init();
        buf
    })
    .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_nhs_number_or_name_reaches_logs_metrics_or_subjects() {
    let logs = captured_logs();
    let b = Backbone::start().await;
    let today = handover_events::time::london_today();
    let demo = handover::demo::demo_week(11, today);
    let mut secrets: Vec<String> = Vec::new();
    for e in &demo {
        secrets.push(e["subject"].as_str().unwrap().to_string());
        for f in ["given_name", "family_name"] {
            if let Some(n) = e["data"][f].as_str() {
                secrets.push(n.to_string());
            }
        }
    }
    secrets.sort();
    secrets.dedup();
    assert!(secrets.len() > 300);
    // a full run: ingest over HTTP, projection, every read path, bad input, the UI
    for chunk in demo.chunks(400) {
        assert_eq!(
            b.post_events(&Value::Array(chunk.to_vec())).await.status(),
            202
        );
    }
    b.caught_up().await;
    let nhs_numbers: Vec<&str> = demo
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .take(50)
        .collect();
    for n in &nhs_numbers {
        let _ = get(
            &b,
            &format!("/v1/persons/{n}/journey"),
            Some(&token(Role::DischargeTeam)),
            Some("direct-care"),
        )
        .await;
        let _ = get(
            &b,
            &format!("/v1/persons/{n}/journey"),
            Some(&token(Role::Broker)),
            Some("direct-care"),
        )
        .await;
    }
    let _ = get(
        &b,
        "/v1/worklists/discharge-delays",
        Some(&token(Role::DischargeTeam)),
        None,
    )
    .await;
    let _ = get(
        &b,
        "/v1/worklists/brokerage",
        Some(&token(Role::Broker)),
        None,
    )
    .await;
    let _ = get(
        &b,
        &format!("/v1/audit?nhs_number={}", nhs_numbers[0]),
        Some(&token(Role::Auditor)),
        None,
    )
    .await;
    let mut bad = demo[0].clone();
    bad["data"] = json!({"encounter_id": 5});
    let _ = b.post_events(&bad).await;
    let metrics = get(&b, "/metrics", None, None).await.text().await.unwrap();

    // every subject in the event and audit streams
    let mut subjects = Vec::new();
    let mut feed = b.rt().log.feed("leak-scan", None, 0).await.unwrap();
    let last = b.rt().log.last_sequence().await.unwrap();
    let mut seen = 0;
    while seen < last {
        let batch = feed.next_batch(1000).await.unwrap();
        for d in &batch.deliveries {
            subjects.push(d.subject.clone());
            seen = seen.max(d.sequence);
        }
    }
    assert_eq!(subjects.len() as u64, last);

    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        log_text.contains("journey"),
        "the capture saw the run's logs"
    );
    let haystacks = [
        ("logs", log_text),
        ("metrics", metrics),
        ("subjects", subjects.join("\n")),
    ];
    for (what, text) in &haystacks {
        for s in &secrets {
            let hit = if s.chars().all(|c| c.is_ascii_digit()) {
                text.contains(s.as_str())
            } else {
                // names as whole words
                text.split(|c: char| !c.is_alphanumeric()).any(|w| w == s)
            };
            assert!(!hit, "{what} contain an identifier: {s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_removes_a_person_from_the_stream_and_every_read_model_and_a_rebuild_does_not_bring_them_back(
) {
    let mut b = Backbone::start().await;
    let other = "9434765870";
    let council_id = json!({"system": "urn:gss:E08000035:mosaic:person", "value": "MOS-1"});
    let mut events = journey_events().as_array().unwrap().clone();
    events.push(ev(
        "g8",
        LEEDS,
        "person.linked",
        NHS,
        "2026-11-06T09:00:00Z",
        json!({"local_id": council_id}),
    ));
    // the person's last event is known to the council by its own id only
    let mut by_local = ev(
        "g9",
        LEEDS,
        "referral.assessment-completed",
        NHS,
        "2026-11-06T10:00:00Z",
        json!({"referral_id": "R1", "assessment_type": "needs", "outcome": "eligible", "local_id": council_id}),
    );
    by_local.as_object_mut().unwrap().remove("subject");
    events.push(by_local);
    // someone else, who must be untouched
    events.push(ev("o1", PAS, "discharge.admitted", other, "2026-11-03T09:00:00Z",
        json!({"encounter_id":"E2","site":"RX1CC","admitted_at":"2026-11-03T09:00:00Z","responsible_council":"E08000035"})));
    events.push(ev(
        "o2",
        PAS,
        "discharge.ready-date-recorded",
        other,
        "2026-11-04T09:00:00Z",
        json!({"encounter_id":"E2","discharge_ready_date":"2026-11-04"}),
    ));
    assert_eq!(b.post_events(&Value::Array(events)).await.status(), 202);
    b.caught_up().await;
    let j: Value = get(
        &b,
        &format!("/v1/persons/{NHS}/journey"),
        Some(&token(Role::DischargeTeam)),
        Some("direct-care"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(j["timeline"].as_array().unwrap().len(), 9);

    let erase = |tok: String, body: Value| {
        let b = &b;
        async move {
            b.http
                .post(format!("{}/v1/admin/persons/{NHS}/erasure", b.base))
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        erase(token(Role::DischargeTeam), json!({"reason": "x"}))
            .await
            .status(),
        403
    );
    assert_eq!(erase(token(Role::Admin), json!({})).await.status(), 400);
    let r = erase(
        token(Role::Admin),
        json!({"reason": "DPO decision 2026-114: recorded in error"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let summary: Value = r.json().await.unwrap();
    assert_eq!(summary["events_purged"], 9);
    assert_eq!(
        summary["person_keys"], 3,
        "NHS number, hospital MRN and council id"
    );

    // gone from every read model
    assert_eq!(
        get(
            &b,
            &format!("/v1/persons/{NHS}/journey"),
            Some(&token(Role::DischargeTeam)),
            Some("direct-care")
        )
        .await
        .status(),
        404
    );
    let w: Value = get(
        &b,
        "/v1/worklists/discharge-delays",
        Some(&token(Role::DischargeTeam)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let shown: Vec<&str> = w["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["person"]["nhs_number"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [other]);
    let q: Value = get(
        &b,
        "/v1/worklists/brokerage",
        Some(&token(Role::Broker)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(q["total"], 0);
    // gone from the stream: only the other person's two events remain
    let mut feed = b.rt().log.feed("erasure-check", None, 0).await.unwrap();
    let mut remaining = Vec::new();
    let last = b.rt().log.last_sequence().await.unwrap();
    while remaining
        .last()
        .map(|d: &handover_nats::Delivery| d.sequence)
        < Some(last)
    {
        let batch = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next_batch(100))
            .await
            .expect("the other person's events are delivered")
            .unwrap();
        remaining.extend(batch.deliveries.iter().cloned());
    }
    assert_eq!(remaining.len(), 2);
    assert!(remaining
        .iter()
        .all(|d| String::from_utf8_lossy(&d.payload).contains(other)));
    // the erasure is recorded, with its reason
    let a: Value = get(
        &b,
        &format!("/v1/audit?nhs_number={NHS}"),
        Some(&token(Role::Auditor)),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    let last = a["records"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "erasure");
    assert_eq!(last["reason"], "DPO decision 2026-114: recorded in error");
    assert_eq!(last["user"], "test-admin-RX1");

    // a rebuild from the stream into an empty store does not bring them back
    b.rt.take().unwrap().shutdown().await;
    std::fs::remove_dir_all(b.dir.path().join("store")).unwrap();
    b.start_runtime().await;
    handover_testkit::wait_until(
        std::time::Duration::from_secs(30),
        "the rebuilt read model",
        || std::net::TcpStream::connect(b.base.trim_start_matches("http://")).is_ok(),
    );
    let mut other_back = false;
    for _ in 0..300 {
        let r = get(
            &b,
            &format!("/v1/persons/{other}/journey"),
            Some(&token(Role::DischargeTeam)),
            Some("direct-care"),
        )
        .await;
        if r.status() == 200 {
            other_back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(other_back, "the other person's journey is rebuilt");
    assert_eq!(
        get(
            &b,
            &format!("/v1/persons/{NHS}/journey"),
            Some(&token(Role::DischargeTeam)),
            Some("direct-care")
        )
        .await
        .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_viewed_my_record_includes_reads_under_a_number_merged_into_mine() {
    let b = loaded().await;
    let new = crate::support::nhs_numbers(943_476_600, 1).remove(0);
    let read = |nhs: String| {
        let b = &b;
        async move {
            let r = get(
                b,
                &format!("/v1/persons/{nhs}/journey"),
                Some(&token(Role::DischargeTeam)),
                Some("direct-care"),
            )
            .await;
            assert_eq!(r.status(), 200);
        }
    };
    let audit = |nhs: String| {
        let b = &b;
        async move {
            let r = get(
                b,
                &format!("/v1/audit?nhs_number={nhs}"),
                Some(&token(Role::Auditor)),
                None,
            )
            .await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    // Read under the number the person had, then the trust replaces it.
    read(NHS.to_string()).await;
    let change = json!([ev(
        "g-merge",
        PAS,
        "person.nhs-number-changed",
        &new,
        "2026-11-06T09:00:00Z",
        json!({"previous_nhs_number": NHS})
    )]);
    assert_eq!(b.post_events(&change).await.status(), 202);
    b.caught_up().await;
    read(new.clone()).await;
    let journeys = |a: &Value| -> Vec<String> {
        a["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "journey")
            .map(|r| r["nhs_number"].as_str().unwrap().to_owned())
            .collect()
    };
    // Under the new number: both reads, in the order they were made.
    assert_eq!(
        journeys(&audit(new.clone()).await),
        [NHS.to_string(), new.clone()]
    );
    // Under the old one, which finds the same person: the same two.
    assert_eq!(
        journeys(&audit(NHS.to_string()).await),
        [NHS.to_string(), new.clone()]
    );
}
