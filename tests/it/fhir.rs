//! FHIR R4 intake end to end: a transaction Bundle becomes one person's stay, referral and
//! care package; a resend is stored once; errors are OperationOutcomes and store nothing.

use handover_api::Role;
use serde_json::{json, Value};

use crate::support::{token, token_for, Backbone};

const NHS: &str = "9434765919";

fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/fhir/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `nhs`'s journey once caught up, as read with `token`.
async fn journey_as(b: &Backbone, nhs: &str, token: &str) -> Value {
    b.caught_up().await;
    let r = b
        .http
        .get(format!("{}/v1/persons/{nhs}/journey", b.base))
        .bearer_auth(token)
        .header("handover-access-reason", "direct-care")
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body:#}");
    body
}

/// The journey as read by the trust the FHIR fixtures come from (RR8).
async fn journey(b: &Backbone) -> Value {
    journey_as(b, NHS, &token_for(Role::DischargeTeam, "RR8")).await
}

/// The journey as read by the council the EpisodeOfCare fixture comes from (E08000035).
async fn council_journey(b: &Backbone) -> Value {
    journey_as(b, NHS, &token_for(Role::SocialWorker, "E08000035")).await
}

async fn post(b: &Backbone, path: &str, role: Role, body: &Value) -> (u16, String, Value) {
    let r = b
        .http
        .post(format!("{}{path}", b.base))
        .bearer_auth(token(role))
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_bundle_becomes_a_journey_and_a_resend_is_stored_once() {
    let b = Backbone::start().await;
    let bundle = fixture("bundle_transaction.json");
    // A trust's integration token may not assert another trust's or a council's resources.
    let r = b
        .http
        .post(format!("{}/fhir/r4", b.base))
        .bearer_auth(token(Role::Integration))
        .header("content-type", "application/fhir+json")
        .body(bundle.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert_eq!(oo["issue"][0]["code"], "forbidden");
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("may not publish as"),
        "{oo:#}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 0);
    let (status, ct, body) = post(&b, "/fhir/r4", Role::Admin, &bundle).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(ct, "application/fhir+json");
    assert_eq!(body["resourceType"], "Bundle");
    assert_eq!(body["type"], "transaction-response");
    let statuses: Vec<&str> = body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    // Patient, Encounter, ServiceRequest, Organization (referenced only), EpisodeOfCare
    assert_eq!(
        statuses,
        [
            "201 Created",
            "201 Created",
            "201 Created",
            "200 OK",
            "201 Created"
        ]
    );
    let stored = b.rt().log.last_sequence().await.unwrap();
    assert_eq!(
        stored, 5,
        "identified, admitted, transferred, sent, requested"
    );

    let j = journey(&b).await;
    let stay = &j["stays"][0];
    assert_eq!(stay["encounter_id"], "RR8-SP-2026-118834", "{j:#}");
    assert_eq!(stay["ward"], "Ward L27 (Elderly Care)", "{j:#}");
    assert_eq!(stay["site"], "RR8");
    assert_eq!(j["referrals"][0]["referral_id"], "RR8-REF-77120");
    assert_eq!(j["referrals"][0]["to_council"], "E08000035");
    assert_eq!(j["care_packages"][0]["package_id"], "LCC-PKG-5521");
    assert_eq!(j["care_packages"][0]["service_type"], "reablement");
    assert_eq!(j["identity"]["nhs_number_status"], "01");
    assert_eq!(j["timeline"].as_array().unwrap().len(), 5);

    // The same Bundle again: 200, every entry already stored, nothing new in the stream.
    let (status, _, body) = post(&b, "/fhir/r4", Role::Admin, &bundle).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["response"]["status"] == "200 OK"));
    assert!(body.to_string().contains("already stored"));
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), stored);
    let j = journey(&b).await;
    assert_eq!(j["timeline"].as_array().unwrap().len(), 5);

    // A later version of the Encounter, posted on its own, discharges the stay; the 201
    // names the version created (FHIR R4 http.html#create).
    let r = b
        .http
        .post(format!("{}/fhir/r4/Encounter", b.base))
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/fhir+json")
        .body(fixture("encounter_finished.json").to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers().get("location").map(|v| v.to_str().unwrap()),
        Some("/fhir/r4/Encounter/enc-4471/_history/4")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{body:#}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert_eq!(body["issue"][0]["severity"], "information");
    let j = journey(&b).await;
    assert_eq!(j["stays"][0]["status"], "discharged", "{j:#}");
    assert_eq!(j["stays"][0]["destination"], "usual-residence");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_errors_are_operation_outcomes_and_store_nothing() {
    let b = Backbone::start().await;
    // One bad entry: the whole Bundle is refused, every problem named by FHIRPath.
    let mut bundle = fixture("bundle_transaction.json");
    bundle["entry"][0]["resource"]["identifier"][0]["value"] = json!("9434765918");
    bundle["entry"][2]["resource"]["priority"] = json!("whenever");
    let (status, ct, body) = post(&b, "/fhir/r4", Role::Admin, &bundle).await;
    assert_eq!(status, 400, "{body:#}");
    assert_eq!(ct, "application/fhir+json");
    assert_eq!(body["resourceType"], "OperationOutcome");
    let expressions: Vec<&str> = body["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["expression"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        expressions,
        [
            "Bundle.entry[0].resource.identifier[0].value",
            "Bundle.entry[2].resource.priority"
        ]
    );
    assert_eq!(body["issue"][0]["code"], "value");
    assert_eq!(body["issue"][1]["code"], "code-invalid");

    // The URL and the body disagree.
    let (status, _, body) = post(
        &b,
        "/fhir/r4/Encounter",
        Role::Admin,
        &fixture("patient.json"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["issue"][0]["code"], "structure");
    // An unsupported type.
    let (status, _, body) = post(
        &b,
        "/fhir/r4/Observation",
        Role::Admin,
        &json!({"resourceType": "Observation"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["issue"][0]["code"], "not-supported");

    // Authentication and roles, as OperationOutcomes.
    let r = b
        .http
        .post(format!("{}/fhir/r4/Patient", b.base))
        .header("content-type", "application/fhir+json")
        .body(fixture("patient.json").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["issue"][0]["code"], "login");
    let (status, _, body) = post(
        &b,
        "/fhir/r4/Patient",
        Role::DischargeTeam,
        &fixture("patient.json"),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["issue"][0]["code"], "forbidden");
    // Media type.
    let r = b
        .http
        .post(format!("{}/fhir/r4/Patient", b.base))
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/xml")
        .body("<Patient/>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        0,
        "nothing stored"
    );
}

/// `enc` as version `v` with `status`, updated at `updated`, still on its first ward.
fn encounter_version(v: u32, status: &str, updated: &str) -> Value {
    let mut e = fixture("encounter_finished.json");
    e["meta"]["versionId"] = json!(v.to_string());
    e["meta"]["lastUpdated"] = json!(updated);
    e["status"] = json!(status);
    if status != "finished" {
        e["period"].as_object_mut().unwrap().remove("end");
        e.as_object_mut().unwrap().remove("hospitalization");
        e["location"] = json!([e["location"][0].clone()]);
        e["location"][0]["status"] = json!("active");
        e["location"][0]["period"]
            .as_object_mut()
            .unwrap()
            .remove("end");
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encounter_put_back_in_progress_after_entered_in_error_is_in_hospital() {
    let b = Backbone::start().await;
    // A stay the trust admitted before Handover saw it: its discharge alone tells where and
    // when it began.
    let (status, _, body) = post(
        &b,
        "/fhir/r4/Encounter",
        Role::Admin,
        &fixture("encounter_finished.json"),
    )
    .await;
    assert_eq!(status, 201, "{body:#}");
    let j = journey(&b).await;
    let stay = &j["stays"][0];
    assert_eq!(stay["status"], "discharged", "{j:#}");
    assert_eq!(stay["admitted_at"], "2026-11-20T09:14:00Z", "{j:#}");
    assert_eq!(stay["site"], "RR8", "{j:#}");
    assert_eq!(stay["ward"], "Ward L27 (Elderly Care)", "{j:#}");

    // Another spell: in progress, entered in error, then in progress again. The last
    // version carries the original period.start, which sorts before the cancellation; the
    // cancellation must not undo what was recorded after it.
    let spell = |v: u32, status: &str, updated: &str| {
        let mut e = encounter_version(v, status, updated);
        e["id"] = json!("enc-5100");
        e["identifier"][0]["value"] = json!("RR8-SP-2026-120001");
        e["period"]["start"] = json!("2026-11-28T08:00:00Z");
        e["location"][0]["period"]["start"] = json!("2026-11-28T08:00:00Z");
        e
    };
    for (v, status, updated) in [
        (1, "in-progress", "2026-11-28T08:05:00Z"),
        (2, "entered-in-error", "2026-11-28T09:00:00Z"),
        (3, "in-progress", "2026-11-28T09:30:00Z"),
    ] {
        let (code, _, body) = post(
            &b,
            "/fhir/r4/Encounter",
            Role::Admin,
            &spell(v, status, updated),
        )
        .await;
        assert_eq!(code, 201, "version {v}: {body:#}");
        let j = journey(&b).await;
        let stay = j["stays"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["encounter_id"] == "RR8-SP-2026-120001")
            .unwrap()
            .clone();
        let want = if status == "entered-in-error" {
            "cancelled"
        } else {
            "in-hospital"
        };
        assert_eq!(stay["status"], want, "after version {v}: {j:#}");
    }
    let j = journey(&b).await;
    assert_eq!(
        j["current_stay"]["encounter_id"], "RR8-SP-2026-120001",
        "{j:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_care_package_back_on_after_a_hold_is_started_again() {
    let b = Backbone::start().await;
    let version = |v: u32, status: &str, updated: &str| {
        let mut e = fixture("episode_of_care.json");
        e["meta"]["versionId"] = json!(v.to_string());
        e["meta"]["lastUpdated"] = json!(updated);
        e["status"] = json!(status);
        e["period"] = json!({"start": "2026-10-10"});
        e
    };
    let mut back_on = version(3, "active", "2026-10-25T09:05:00Z");
    back_on["statusHistory"] = json!([
        {"status": "active", "period": {"start": "2026-10-10", "end": "2026-10-18T10:00:00Z"}},
        {"status": "onhold", "period": {"start": "2026-10-18T10:00:00Z", "end": "2026-10-25T09:00:00Z"}}
    ]);
    for (v, body, want) in [
        (1, version(1, "active", "2026-10-10T08:00:00Z"), "started"),
        (2, version(2, "onhold", "2026-10-18T10:00:00Z"), "suspended"),
        (3, back_on.clone(), "started"),
        // The same version again changes nothing.
        (3, back_on, "started"),
    ] {
        let (code, _, out) = post(&b, "/fhir/r4/EpisodeOfCare", Role::Admin, &body).await;
        assert!(code == 201 || code == 200, "version {v}: {out:#}");
        let j = council_journey(&b).await;
        assert_eq!(
            j["care_packages"][0]["status"], want,
            "after version {v}: {j:#}"
        );
    }
    let j = council_journey(&b).await;
    let resumed = j["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "handover.care-package.resumed.v1")
        .count();
    assert_eq!(resumed, 1, "{j:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_bundle_is_answered_with_a_response_message() {
    let b = Backbone::start().await;
    let mut bundle = fixture("bundle_transaction.json");
    bundle["type"] = json!("message");
    let header = json!({
        "fullUrl": "urn:uuid:7d1c9a52-0f1e-4c7a-9a55-2f1f8b3c4d11",
        "resource": {
            "resourceType": "MessageHeader",
            "id": "7d1c9a52-0f1e-4c7a-9a55-2f1f8b3c4d11",
            "eventCoding": {
                "system": "https://fhir.nhs.uk/CodeSystem/message-events-bars",
                "code": "servicerequest-request"
            },
            "source": { "endpoint": "https://rr8.example.nhs.uk/fhir" }
        }
    });
    bundle["entry"].as_array_mut().unwrap().insert(0, header);
    let (status, ct, body) = post(&b, "/fhir/r4", Role::Admin, &bundle).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(ct, "application/fhir+json");
    assert_eq!(body["resourceType"], "Bundle", "{body:#}");
    assert_eq!(body["type"], "message", "{body:#}");
    let mh = &body["entry"][0]["resource"];
    assert_eq!(mh["resourceType"], "MessageHeader", "{body:#}");
    assert_eq!(mh["response"]["code"], "ok", "{body:#}");
    assert_eq!(
        mh["response"]["identifier"], "7d1c9a52-0f1e-4c7a-9a55-2f1f8b3c4d11",
        "{body:#}"
    );
    assert_eq!(mh["eventCoding"]["code"], "servicerequest-request");
    assert_eq!(
        mh["destination"][0]["endpoint"],
        "https://rr8.example.nhs.uk/fhir"
    );
    // The details it names are the OperationOutcome in the same Bundle.
    assert_eq!(
        mh["response"]["details"]["reference"],
        body["entry"][1]["fullUrl"]
    );
    assert_eq!(
        body["entry"][1]["resource"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 5);
    let j = journey(&b).await;
    assert_eq!(j["stays"][0]["encounter_id"], "RR8-SP-2026-118834", "{j:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_patients_resource_under_the_same_id_and_version_is_stored() {
    let b = Backbone::start().await;
    let other = crate::support::nhs_numbers(943_400_000, 1).remove(0);
    let first = encounter_version(1, "in-progress", "2026-11-20T09:20:00Z");
    let mut second = first.clone();
    second["subject"]["identifier"]["value"] = json!(other);
    let (code, _, body) = post(&b, "/fhir/r4/Encounter", Role::Admin, &first).await;
    assert_eq!(code, 201, "{body:#}");
    let (code, _, body) = post(&b, "/fhir/r4/Encounter", Role::Admin, &second).await;
    assert_eq!(code, 201, "another person's admission is new: {body:#}");
    // Each resent is still stored once.
    for r in [&first, &second] {
        let (code, _, body) = post(&b, "/fhir/r4/Encounter", Role::Admin, r).await;
        assert_eq!(code, 200, "{body:#}");
    }
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 2);
    for nhs in [NHS, other.as_str()] {
        let j = journey_as(&b, nhs, &token_for(Role::DischargeTeam, "RR8")).await;
        assert_eq!(j["current_stay"]["status"], "in-hospital", "{j:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unversioned_bundle_retried_with_fresh_urn_uuids_is_stored_once() {
    let b = Backbone::start().await;
    let mut bundle = fixture("bundle_transaction.json");
    for e in bundle["entry"].as_array_mut().unwrap() {
        if let Some(meta) = e["resource"].get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("versionId");
        }
    }
    let (status, _, body) = post(&b, "/fhir/r4", Role::Admin, &bundle).await;
    assert_eq!(status, 200, "{body:#}");
    let stored = b.rt().log.last_sequence().await.unwrap();
    assert_eq!(stored, 5);
    // The sender retries, minting new urn:uuids for the entries (and their references).
    let retried: Value = serde_json::from_str(&bundle.to_string().replace(
        "6f1c7a52-3d2b-4c8e-9b0a-2f5e8d7c1a0",
        "0d9e8f7a-1b2c-4d3e-8f4a-5b6c7d8e9f0",
    ))
    .unwrap();
    assert_ne!(retried, bundle);
    let (status, _, body) = post(&b, "/fhir/r4", Role::Admin, &retried).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(
        body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["response"]["status"] == "200 OK"),
        "{body:#}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), stored);
}

/// A request to `path` with `body` as bytes and extra `headers`, as the admin; the status
/// and the answer (JSON).
async fn send(
    b: &Backbone,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = b
        .http
        .request(method, format!("{}{path}", b.base))
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/fhir+json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.body(body).send().await.unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()["content-type"],
        "application/fhir+json",
        "{path}"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_trust_systems_send_reaches_the_person_s_journey() {
    let b = Backbone::start().await;
    // A transaction whose Encounter names the person by reference and by the trust's MRN,
    // posted to the base URL with a trailing slash, with a byte order mark before the JSON.
    let mut bundle = fixture("bundle_transaction.json");
    bundle["entry"][1]["resource"]["subject"]["identifier"] =
        json!({"system": "https://fhir.leedsth.nhs.uk/Id/mrn", "value": "RR80042317"});
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(bundle.to_string().bytes());
    let (status, out) = send(&b, reqwest::Method::POST, "/fhir/r4/", &[], body).await;
    assert_eq!(status, 200, "{out:#}");
    let j = journey(&b).await;
    assert_eq!(
        j["stays"][0]["encounter_id"], "RR8-SP-2026-118834",
        "the stay is on the NHS number's journey: {j:#}"
    );

    // The discharge as an update (PUT) with destination 99, not known: stored without one.
    let mut finished = fixture("encounter_finished.json");
    finished["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] = json!("99");
    let (status, out) = send(
        &b,
        reqwest::Method::PUT,
        "/fhir/r4/Encounter/enc-4471",
        &[],
        finished.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{out:#}");
    let j = journey(&b).await;
    assert_eq!(j["stays"][0]["status"], "discharged", "{j:#}");
    assert!(
        j["stays"][0].get("destination").is_none_or(Value::is_null),
        "{j:#}"
    );
    // An update whose body is another resource's is refused (FHIR http.html#update).
    let (status, out) = send(
        &b,
        reqwest::Method::PUT,
        "/fhir/r4/Encounter/enc-9999",
        &[],
        finished.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{out:#}");
    assert_eq!(out["issue"][0]["expression"][0], "Encounter.id");

    // The Patient's number replaced (PDS lists the old one with `use: old`): the new number
    // is the subject, and its journey takes in the old one's.
    let new = crate::support::nhs_numbers(943_400_000, 1).remove(0);
    let mut patient = fixture("patient.json");
    patient["meta"]["versionId"] = json!("4");
    patient["identifier"][0]["use"] = json!("old");
    patient["identifier"].as_array_mut().unwrap().push(
        json!({"use": "official", "system": "https://fhir.nhs.uk/Id/nhs-number", "value": new}),
    );
    let (status, out) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4/Patient",
        &[],
        patient.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{out:#}");
    assert!(out.to_string().contains("nhs-number-changed"), "{out:#}");
    let j = journey_as(&b, &new, &token_for(Role::DischargeTeam, "RR8")).await;
    assert_eq!(j["identity"]["previous_nhs_numbers"], json!([NHS]), "{j:#}");
    assert_eq!(j["stays"][0]["encounter_id"], "RR8-SP-2026-118834", "{j:#}");
    // A resend records nothing new.
    let sequence = b.rt().log.last_sequence().await.unwrap();
    let (status, _) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4/Patient",
        &[],
        patient.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_clients_get_a_capability_statement_and_clear_refusals() {
    let b = Backbone::start().await;
    // The CapabilityStatement: like every /fhir call it needs a token, of any role.
    let url = format!("{}/fhir/r4/metadata", b.base);
    let r = b.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let oo: Value = r.json().await.unwrap();
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let r = b
        .http
        .get(&url)
        .bearer_auth(token(Role::Auditor))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/fhir+json");
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["status"], "active");
    assert_eq!(cs["kind"], "instance");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    assert_eq!(cs["format"], json!(["json"]));
    assert_eq!(cs["software"]["name"], "Handover");
    let rest = &cs["rest"][0];
    assert_eq!(rest["mode"], "server");
    let types: Vec<&str> = rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Encounter", "ServiceRequest", "EpisodeOfCare", "Patient"]
    );
    assert!(rest["resource"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["interaction"][0]["code"] == "create"));
    assert_eq!(rest["interaction"][0]["code"], "transaction");

    let encounter = fixture("encounter_in_progress.json").to_string();
    // A compressed body: 415, naming the encoding (not "the body is not valid JSON").
    let (status, out) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4/Encounter",
        &[("content-encoding", "gzip")],
        encounter.clone().into_bytes(),
    )
    .await;
    assert_eq!(status, 415, "{out:#}");
    assert_eq!(out["issue"][0]["code"], "not-supported");
    assert!(
        out["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("gzip"),
        "{out:#}"
    );
    // A JSON array is not a resource.
    let (status, out) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4/Encounter",
        &[],
        b"[]".to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{out:#}");
    assert_eq!(
        out["issue"][0]["diagnostics"],
        "the body must be a JSON object (a FHIR resource)"
    );
    // A body over the limit says what the limit is, under /fhir and /v1 alike.
    let (status, out) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4",
        &[],
        vec![b' '; handover_api::MAX_BODY + 1],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(out["issue"][0]["code"], "too-costly");
    assert!(
        out["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("16 MiB"),
        "{out:#}"
    );
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/cloudevents-batch+json")
        .body(vec![b' '; handover_api::MAX_BODY + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("16 MiB"), "{p:#}");
    // An attendance records nothing, and the answer says it is the class.
    let mut amb = fixture("encounter_in_progress.json");
    amb["class"]["code"] = json!("AMB");
    let (status, out) = send(
        &b,
        reqwest::Method::POST,
        "/fhir/r4/Encounter",
        &[],
        amb.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{out:#}");
    assert!(
        out["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("class AMB"),
        "{out:#}"
    );
    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        0,
        "nothing stored"
    );
    // An XML-only client is told, before anything is stored, that answers are JSON: 406.
    let raw = |path: &str, headers: &[(&str, &str)]| {
        let mut req = b
            .http
            .post(format!("{}{path}", b.base))
            .bearer_auth(token(Role::Admin));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(encounter.clone())
    };
    for accept in [
        "application/fhir+xml",
        "application/xml, text/xml;q=0.9",
        "application/fhir+json;q=0, application/fhir+xml",
    ] {
        let r = raw(
            "/fhir/r4/Encounter",
            &[
                ("content-type", "application/fhir+json"),
                ("accept", accept),
            ],
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 406, "{accept}");
        assert_eq!(r.headers()["content-type"], "application/fhir+json");
        let oo: Value = r.json().await.unwrap();
        assert_eq!(oo["issue"][0]["code"], "not-supported", "{oo:#}");
    }
    let r = b
        .http
        .get(&url)
        .bearer_auth(token(Role::Auditor))
        .header("accept", "application/fhir+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 0);
    // A compressed body's 415 says which coding to use instead (RFC 9110 15.5.16).
    let r = raw(
        "/fhir/r4/Encounter",
        &[
            ("content-type", "application/fhir+json"),
            ("content-encoding", "gzip"),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["accept-encoding"], "identity");
    // The DSTU2/STU3 media type older clients send, with an Accept naming it among others.
    let r = raw(
        "/fhir/r4/Encounter",
        &[
            ("content-type", "application/json+fhir; charset=utf-8"),
            (
                "accept",
                "application/xml+fhir;q=0.9, application/json+fhir",
            ),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert!(b.rt().log.last_sequence().await.unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_clients_choose_what_a_create_returns_and_in_which_format() {
    let b = Backbone::start().await;
    let ask = |path: &str, headers: &[(&str, &str)], body: &Value| {
        let mut req = b
            .http
            .post(format!("{}{path}", b.base))
            .bearer_auth(token(Role::Admin));
        if !headers.iter().any(|(k, _)| *k == "content-type") {
            req = req.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_string()).send()
    };
    let stored = || async { b.rt().log.last_sequence().await.unwrap() };

    // Prefer: return=minimal (FHIR R4 http.html#ops): a 201 with its Location and no body.
    let mut encounter = fixture("encounter_in_progress.json");
    let r = ask(
        "/fhir/r4/Encounter",
        &[("prefer", "return=minimal")],
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["preference-applied"], "return=minimal");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/fhir/r4/Encounter/"), "{location}");
    assert!(r.headers().get("content-type").is_none());
    assert!(r.bytes().await.unwrap().is_empty());
    let after_minimal = stored().await;
    assert!(
        after_minimal > 0,
        "the minimal answer came once the events were stored"
    );

    // return=representation: the resource as received (Handover keeps events, not
    // resources), among other preferences and quoted.
    encounter["id"] = json!("enc-representation");
    encounter["identifier"][0]["value"] = json!("RR8-V-2");
    let r = ask(
        "/fhir/r4/Encounter",
        &[("prefer", "handling=lenient, return=\"representation\"")],
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["preference-applied"], "return=representation");
    assert_eq!(r.headers()["content-type"], "application/fhir+json");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, encounter);
    assert!(stored().await > after_minimal);

    // return=OperationOutcome, and no preference at all: the outcome of each event.
    for prefer in [Some("return=OperationOutcome"), None] {
        let headers: Vec<(&str, &str)> = prefer.map(|p| ("prefer", p)).into_iter().collect();
        let r = ask("/fhir/r4/Encounter", &headers, &encounter)
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a resend");
        assert_eq!(
            r.headers()
                .get("preference-applied")
                .map(|v| v.to_str().unwrap()),
            prefer
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["resourceType"], "OperationOutcome", "{body:#}");
    }

    // In a transaction, each entry answers as asked: minimal is the status and location.
    let mut bundle = fixture("bundle_transaction.json");
    let r = ask("/fhir/r4", &[("prefer", "return=minimal")], &bundle)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["preference-applied"], "return=minimal");
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["type"], "transaction-response");
    let entries = answer["entry"].as_array().unwrap();
    assert_eq!(entries.len(), bundle["entry"].as_array().unwrap().len());
    for e in entries {
        assert!(
            e.get("resource").is_none() && e["response"].get("outcome").is_none(),
            "{e:#}"
        );
        assert!(
            e["response"]["status"].as_str().unwrap().starts_with("20"),
            "{e:#}"
        );
    }
    // Representation: each entry carries its resource; a resend is 200 OK throughout.
    let r = ask("/fhir/r4", &[("prefer", "return=representation")], &bundle)
        .await
        .unwrap();
    let answer: Value = r.json().await.unwrap();
    for (i, e) in answer["entry"].as_array().unwrap().iter().enumerate() {
        assert_eq!(e["resource"], bundle["entry"][i]["resource"], "{e:#}");
        assert_eq!(e["response"]["status"], "200 OK", "{e:#}");
    }
    // A batch too; a new entry's response names where it was created.
    bundle["type"] = json!("batch");
    bundle["entry"][1]["resource"]["id"] = json!("enc-batch");
    bundle["entry"][1]["request"] = json!({"method": "PUT", "url": "Encounter/enc-batch"});
    bundle["entry"][1]["resource"]["identifier"][0]["value"] = json!("RR8-V-3");
    let r = ask("/fhir/r4", &[], &bundle).await.unwrap();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["type"], "batch-response", "{answer:#}");
    let created = &answer["entry"][1]["response"];
    assert_eq!(created["status"], "201 Created", "{answer:#}");
    assert!(
        created["location"]
            .as_str()
            .unwrap()
            .starts_with("/fhir/r4/Encounter/enc-batch"),
        "{created:#}"
    );
    assert_eq!(created["outcome"]["resourceType"], "OperationOutcome");

    // _format overrides Accept (http.html#mime-type): json is served whatever Accept says,
    // xml is a 406 before anything is stored; a version other than R4 is refused too.
    let url = |q: &str| format!("{}/fhir/r4/metadata{q}", b.base);
    let get = |u: String, accept: &'static str| {
        b.http
            .get(u)
            .bearer_auth(token(Role::Auditor))
            .header("accept", accept)
            .send()
    };
    for (q, accept, status) in [
        ("?_format=json", "application/fhir+xml", 200),
        ("?_format=application/fhir%2Bjson", "*/*", 200),
        ("?_format=application/fhir+json", "application/xml", 200),
        ("?_format=xml", "application/fhir+json", 406),
        ("?_format=application/fhir%2Bxml", "*/*", 406),
        ("", "application/fhir+json; fhirVersion=3.0", 406),
        ("", "application/fhir+json; fhirVersion=4.0", 200),
        ("?_format=json&_pretty=true", "application/fhir+json", 200),
    ] {
        let r = get(url(q), accept).await.unwrap();
        assert_eq!(r.status(), status, "{q} {accept}");
        assert_eq!(r.headers()["content-type"], "application/fhir+json");
        let body: Value = r.json().await.unwrap();
        let expected = if status == 200 {
            "CapabilityStatement"
        } else {
            "OperationOutcome"
        };
        assert_eq!(body["resourceType"], expected, "{q} {accept}");
    }
    let before = stored().await;
    encounter["id"] = json!("enc-xml");
    encounter["identifier"][0]["value"] = json!("RR8-V-4");
    let r = ask("/fhir/r4/Encounter?_format=xml", &[], &encounter)
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let r = ask(
        "/fhir/r4/Encounter",
        &[("content-type", "application/fhir+json; fhirVersion=3.0")],
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 415);
    let oo: Value = r.json().await.unwrap();
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("fhirVersion=3.0"),
        "{oo:#}"
    );
    assert_eq!(
        stored().await,
        before,
        "nothing stored from a refused request"
    );
    let r = ask(
        "/fhir/r4/Encounter?_format=json",
        &[("content-type", "application/fhir+json; fhirVersion=4.0.1")],
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);

    // A conditional update (http.html#cond-update), as engines send what they know by its
    // identifier, is taken as a create; a PUT naming neither an id nor a search is a 400.
    let put = |q: &str, body: &Value| {
        b.http
            .put(format!("{}/fhir/r4/Encounter{q}", b.base))
            .bearer_auth(token(Role::Admin))
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
    };
    encounter["id"] = json!("enc-conditional");
    encounter["identifier"][0]["value"] = json!("RR8-V-5");
    let before = stored().await;
    let r = put(
        "?identifier=https://fhir.leedsth.nhs.uk/Id/spell-number%7CRR8-V-5",
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert!(stored().await > before);
    let r = put(
        "?identifier=https://fhir.leedsth.nhs.uk/Id/spell-number%7CRR8-V-5",
        &encounter,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "a resend");
    let r = put("?_format=json", &encounter).await.unwrap();
    assert_eq!(r.status(), 400);
    let oo: Value = r.json().await.unwrap();
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("conditional update"),
        "{oo:#}"
    );
    let r = b
        .http
        .get(format!("{}/fhir/r4/metadata", b.base))
        .bearer_auth(token(Role::Auditor))
        .send()
        .await
        .unwrap();
    let cs: Value = r.json().await.unwrap();
    assert_eq!(cs["rest"][0]["resource"][0]["conditionalUpdate"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_would_record_more_events_than_a_request_may_is_413_too_costly() {
    let b = Backbone::start().await;
    let before = b.rt().log.last_sequence().await.unwrap();
    let patient = fixture("patient.json");
    let entries: Vec<Value> = (0..=handover_api::MAX_BATCH)
        .map(|i| {
            let mut p = patient.clone();
            p["id"] = json!(format!("p-{i}"));
            json!({"resource": p, "request": {"method": "PUT", "url": format!("Patient/p-{i}")}})
        })
        .collect();
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    let (status, ct, out) = post(&b, "/fhir/r4", Role::Admin, &batch).await;
    assert_eq!(
        (status, ct.as_str()),
        (413, "application/fhir+json"),
        "{out:#}"
    );
    assert_eq!(out["resourceType"], "OperationOutcome");
    assert_eq!(out["issue"][0]["code"], "too-costly");
    let diagnostics = out["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains(&format!("{} events", handover_api::MAX_BATCH + 1))
            && diagnostics.contains("nothing was stored"),
        "{diagnostics}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_bundle_stores_its_good_entries_and_answers_each_bad_one() {
    let b = Backbone::start().await;
    let good = fixture("encounter_in_progress.json");
    let mut bad = good.clone();
    bad["id"] = json!("enc-bad");
    bad["subject"]["identifier"]["value"] = json!("9434765918");
    let entry = |r: &Value| json!({"resource": r, "request": {"method": "PUT", "url": format!("Encounter/{}", r["id"].as_str().unwrap())}});
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        entry(&good),
        entry(&bad),
        {"resource": {"resourceType": "Condition", "id": "c1"}, "request": {"method": "POST", "url": "Condition"}},
        {"request": {"method": "DELETE", "url": "Encounter/enc-old"}},
    ]});
    let (status, ct, out) = post(&b, "/fhir/r4", Role::Admin, &batch).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/fhir+json"),
        "{out:#}"
    );
    assert_eq!(out["type"], "batch-response");
    let statuses: Vec<&str> = out["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "400 Bad Request",
            "200 OK",
            "400 Bad Request"
        ]
    );
    let issue = &out["entry"][1]["response"]["outcome"]["issue"][0];
    assert!(
        issue["diagnostics"]
            .as_str()
            .unwrap()
            .contains("check digit"),
        "{issue}"
    );
    assert!(
        out["entry"][3]["response"]["outcome"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("DELETE"),
        "{out:#}"
    );
    // The good entry is durable and on the journey; the bad one stored nothing.
    let j = journey(&b).await;
    assert_eq!(j["stays"][0]["encounter_id"], "RR8-SP-2026-118834", "{j:#}");
    let stored = b.rt().log.last_sequence().await.unwrap();
    // The same batch again: the good entry is already stored.
    let (status, _, out) = post(&b, "/fhir/r4", Role::Admin, &batch).await;
    assert_eq!(status, 200);
    assert_eq!(out["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), stored);
    // A batch whose every entry fails is still answered entry by entry, storing nothing.
    let all_bad = json!({"resourceType": "Bundle", "type": "batch", "entry": [entry(&bad)]});
    let (status, _, out) = post(&b, "/fhir/r4", Role::Admin, &all_bad).await;
    assert_eq!(status, 200);
    assert_eq!(out["entry"][0]["response"]["status"], "400 Bad Request");
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_transaction_or_batch_is_answered_and_an_empty_message_is_refused() {
    let b = Backbone::start().await;
    let before = b.rt().log.last_sequence().await.unwrap();
    for (kind, answer) in [
        ("transaction", "transaction-response"),
        ("batch", "batch-response"),
    ] {
        for body in [
            json!({"resourceType": "Bundle", "type": kind, "entry": []}),
            json!({"resourceType": "Bundle", "type": kind}),
        ] {
            let (status, _, v) = post(&b, "/fhir/r4", Role::Integration, &body).await;
            assert_eq!(status, 200, "{kind}: {v}");
            assert_eq!(v["resourceType"], "Bundle", "{kind}: {v}");
            assert_eq!(v["type"], answer, "{kind}: {v}");
            assert_eq!(v["entry"], json!([]), "{kind}: {v}");
        }
    }
    let (status, _, v) = post(
        &b,
        "/fhir/r4",
        Role::Integration,
        &json!({"resourceType": "Bundle", "type": "message", "entry": []}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["resourceType"], "OperationOutcome");
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_a_latin_charset_is_read_and_one_in_utf_16_is_415() {
    let b = Backbone::start().await;
    let send = |content_type: &'static str, body: Vec<u8>| {
        b.http
            .post(format!("{}/fhir/r4/Patient", b.base))
            .bearer_auth(token(Role::Admin))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // "Siân" in ISO-8859-1 (one byte, 0xE2, for the â), as a Windows engine labels it.
    let mut p = fixture("patient.json");
    p["name"] = json!([{"use": "official", "family": "Whitfield", "given": ["SIAN"]}]);
    let latin1 = p
        .to_string()
        .replace("SIAN", "Si\u{E2}n")
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect::<Vec<u8>>();
    let r = send("application/fhir+json; charset=ISO-8859-1", latin1.clone())
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    let j = journey(&b).await;
    assert_eq!(j["identity"]["given_name"], "Si\u{E2}n", "{j:#}");

    // The same bytes with no charset named: not UTF-8, said so.
    let r = send("application/fhir+json", latin1).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert!(body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("not UTF-8"));

    // UTF-16, as a .NET client writing a string as Unicode sends it.
    let mut utf16 = vec![0xFF, 0xFE];
    for u in p.to_string().encode_utf16() {
        utf16.extend_from_slice(&u.to_le_bytes());
    }
    let r = send("application/fhir+json; charset=utf-16", utf16)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["issue"][0]["code"], "not-supported");
    assert!(body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("charset=utf-16"));
}
