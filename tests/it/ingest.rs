//! Ingest: 202 only once stored, duplicates stored once, every validation error listed,
//! nothing stored from a batch with an invalid event; `handover publish` file reading.

use handover_api::Role;
use serde_json::{json, Value};

use crate::support::{ev, token, Backbone};

const NHS: &str = "9434765919";

fn admitted(id: &str) -> Value {
    ev(
        id,
        "urn:ods:RX1:pas",
        "discharge.admitted",
        NHS,
        "2026-11-20T09:14:00Z",
        json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_event_is_accepted_once_and_stored_once() {
    let b = Backbone::start().await;
    let first: Value = b.post_events(&admitted("e1")).await.json().await.unwrap();
    assert_eq!(first["accepted"], 1);
    assert_eq!(first["events"][0]["duplicate"], false);
    // Resent by the trust's own integration token, its source spelt in another case
    // (the URN scheme and namespace are case-insensitive, the ODS code upper case): the
    // same event, not a 403 nor a second one.
    let mut shouted = admitted("e1");
    shouted["source"] = json!("URN:ODS:rx1:pas");
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(crate::support::token_for(Role::Integration, "RX1"))
        .header("content-type", "application/cloudevents+json")
        .body(shouted.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let resent: Value = r.json().await.unwrap();
    assert_eq!(resent["duplicates"], 1, "{resent:#}");
    let r = b.post_events(&admitted("e1")).await;
    assert_eq!(r.status(), 202);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicates"], 1);
    assert_eq!(
        second["events"][0]["sequence"],
        first["events"][0]["sequence"]
    );
    // the same id from another source is another event
    let mut other = admitted("e1");
    other["source"] = json!("urn:ods:RR8:epr");
    let third: Value = b.post_events(&other).await.json().await.unwrap();
    assert_eq!(third["accepted"], 1);
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 2);
    b.caught_up().await;
    let j: Value = b.journey(NHS).await.json().await.unwrap();
    assert_eq!(j["timeline"].as_array().unwrap().len(), 2);
    let m = b
        .http
        .get(format!("{}/metrics", b.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("handover_events_ingested_total{result=\"duplicate\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("handover_events_ingested_total{result=\"stored\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_with_every_field_named_and_nothing_stored() {
    let b = Backbone::start().await;
    let mut unknown = admitted("e2");
    unknown["type"] = json!("handover.discharge.teleported.v1");
    let bad_data = ev(
        "e3",
        "urn:ods:RX1:pas",
        "discharge.pathway-assigned",
        "9434765918",
        "2026-11-20T09:14:00Z",
        json!({"pathway": 7}),
    );
    let batch = json!([admitted("e1"), unknown, bad_data]);
    let r = b.post_events(&batch).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/invalid-events"
    );
    assert_eq!(p["status"], 400);
    assert_eq!(p["detail"], "2 of 3 events are invalid; nothing was stored");
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(
        pointers,
        ["/1/type", "/2/subject", "/2/data/pathway", "/2/data"]
    );
    let details: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(details[0].contains("unknown event type"));
    assert!(details[1].contains("check digit"));
    assert!(details[2].contains("maximum of 3"));
    assert!(details[3].contains("encounter_id"));
    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        0,
        "nothing from a bad batch is stored"
    );

    // An empty batch is valid (CloudEvents JSON format 4.3) and stores nothing.
    let r = b.post_events(&json!([])).await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["accepted"], 0);
    assert_eq!(a["events"], json!([]));
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 0);

    // not JSON, wrong media type, wrong role
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Integration))
        .header("content-type", "application/cloudevents+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Integration))
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Broker))
        .header("content-type", "application/cloudevents+json")
        .body(admitted("e1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .header("content-type", "application/cloudevents+json")
        .body(admitted("e1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 0);

    // Two events of one batch under one source and id: the same event twice is stored
    // once; with other content the second is refused (the log would drop it as a resend),
    // and nothing of the batch is stored.
    let mut moved = admitted("e9");
    moved["data"]["ward"] = json!("WARD9");
    let r = b
        .post_events(&json!([admitted("e9"), admitted("e8"), moved]))
        .await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["pointer"], "/2/id", "{p:#}");
    assert!(
        p["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("event /0 of this batch has the same source and id"),
        "{p:#}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 0);
    let r = b
        .post_events(&json!([admitted("e9"), admitted("e9")]))
        .await;
    assert_eq!(r.status(), 202);
    let a: Value = r.json().await.unwrap();
    assert_eq!(
        (a["accepted"].as_u64(), a["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects_carry_no_identifiers() {
    let b = Backbone::start().await;
    assert_eq!(b.post_events(&admitted("e1")).await.status(), 202);
    // read the raw message back from the stream and look at its subject and headers
    let client = async_nats_probe(&b.nats.url()).await;
    assert!(client.starts_with("care.discharge.admitted."), "{client}");
    assert!(!client.contains(NHS));
    assert_eq!(client.rsplit('.').next().unwrap().len(), 32);
}

async fn async_nats_probe(url: &str) -> String {
    // Use the project's own log to open a consumer and read the first delivery's subject.
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::support::config(url, &dir.path().join("s"));
    let log = handover_nats::EventLog::connect(
        url,
        handover_nats::LogConfig::default(),
        cfg.pseudonym_key().unwrap(),
    )
    .await
    .unwrap();
    let mut feed = log.feed("probe", None, 0).await.unwrap();
    let batch = feed.next_batch(1).await.unwrap();
    batch.deliveries[0].subject.clone()
}

#[test]
fn publish_files_are_validated_in_full_with_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, format!("{}\n\n{}\n", admitted("e1"), admitted("e2"))).unwrap();
    assert_eq!(handover::publish::read_events(&good).unwrap().len(), 2);
    let array = dir.path().join("array.json");
    std::fs::write(&array, json!([admitted("e1")]).to_string()).unwrap();
    assert_eq!(handover::publish::read_events(&array).unwrap().len(), 1);
    let bad = dir.path().join("bad.jsonl");
    let mut broken = admitted("e2");
    broken["data"]["site"] = json!(42);
    std::fs::write(&bad, format!("{}\n{}\n", admitted("e1"), broken)).unwrap();
    let err = handover::publish::read_events(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.jsonl: line 2: /data/site"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_mode_cloudevents_base64_data_and_a_byte_order_mark_are_accepted() {
    let b = Backbone::start().await;
    let url = format!("{}/v1/events", b.base);
    // The HTTP binding's binary content mode: attributes in ce-* headers (percent-encoded
    // where they need it), the data as the body.
    let r = b
        .http
        .post(&url)
        .bearer_auth(token(Role::Admin))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-source", "urn:ods:RX1:pas")
        .header("ce-type", "handover.discharge.admitted.v1")
        .header("ce-subject", NHS)
        .header("ce-time", "2026-11-20T09:14:00Z")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"encounter_id":"E1","site":"RX1CC","ward":"Ward%207 stays as sent","admitted_at":"2026-11-20T09:14:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // A binary-mode event is validated like any other: each missing attribute is named.
    let r = b
        .http
        .post(&url)
        .bearer_auth(token(Role::Admin))
        .header("ce-specversion", "1.0")
        .header("ce-type", "handover.discharge.admitted.v1")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    let pointers: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/id") && pointers.contains(&"/source"),
        "{p}"
    );
    // An attribute sent twice could name either of two people: refused.
    let r = b
        .http
        .post(&url)
        .bearer_auth(token(Role::Admin))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-2")
        .header("ce-source", "urn:ods:RX1:pas")
        .header("ce-type", "handover.discharge.admitted.v1")
        .header("ce-subject", NHS)
        .header("ce-subject", "9434765870")
        .header("ce-time", "2026-11-20T09:14:00Z")
        .header("content-type", "application/json")
        .body(r#"{"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-20T09:14:00Z"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("ce-subject header is given more than once"),
        "{p}"
    );
    // Structured mode with a UTF-8 byte order mark before the JSON.
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(admitted("bom-1").to_string().into_bytes());
    let r = b
        .http
        .post(&url)
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Structured mode with the JSON data base64-encoded in data_base64, as some SDKs send
    // every payload: {"encounter_id":"E1","site":"RX1CC","ward":"Ward 9","admitted_at":"2026-11-20T09:14:00Z"}
    let mut event = admitted("b64-1");
    let event_obj = event.as_object_mut().unwrap();
    event_obj.remove("data");
    event_obj.insert("data_base64".into(), json!("eyJlbmNvdW50ZXJfaWQiOiJFMSIsInNpdGUiOiJSWDFDQyIsIndhcmQiOiJXYXJkIDkiLCJhZG1pdHRlZF9hdCI6IjIwMjYtMTEtMjBUMDk6MTQ6MDBaIn0="));
    let r = b.post_events(&event).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    // ...and base64 that is not JSON data is named
    event["data_base64"] = json!("JVBERi0xLjc=");
    event["id"] = json!("b64-2");
    let r = b.post_events(&event).await;
    assert_eq!(r.status(), 400);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["errors"][0]["pointer"], "/data_base64", "{p}");
    b.caught_up().await;
    let j: Value = b.journey(NHS).await.json().await.unwrap();
    let ids: Vec<&str> = j["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bin-1", "bom-1", "b64-1"]);
    assert_eq!(j["timeline"][0]["data"]["ward"], "Ward%207 stays as sent");
    assert_eq!(j["timeline"][2]["data"]["ward"], "Ward 9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_the_framework_answers_are_problem_details_too() {
    let b = Backbone::start().await;
    let check = |r: reqwest::Response, status: u16, content_type: &'static str| async move {
        assert_eq!(r.status(), status);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            content_type,
            "{status}"
        );
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.json::<Value>().await.unwrap(), allow)
    };
    let (p, _) = check(
        b.http
            .get(format!("{}/v1/nothing-here", b.base))
            .send()
            .await
            .unwrap(),
        404,
        "application/problem+json",
    )
    .await;
    assert_eq!(p["type"], "https://handover.example.org/problems/not-found");
    assert_eq!(p["status"], 404);
    let (p, allow) = check(
        b.http
            .delete(format!("{}/v1/events", b.base))
            .send()
            .await
            .unwrap(),
        405,
        "application/problem+json",
    )
    .await;
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/method-not-allowed"
    );
    assert_eq!(allow.as_deref(), Some("POST"));
    assert_eq!(
        p["detail"],
        "this resource does not take that method: the Allow header lists those it does"
    );
    // OPTIONS names the methods a resource takes (RFC 9110 9.3.7); an unknown path is 404.
    for (path, methods) in [
        ("/v1/events", "POST"),
        ("/v1/persons/9434765919/journey", "GET,HEAD"),
        ("/fhir/r4/Encounter/enc-1", "PUT"),
    ] {
        let r = b
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", b.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{path}");
        assert_eq!(r.headers()["allow"], methods, "{path}");
    }
    let r = b
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/nothing-here", b.base),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let (p, _) = check(
        b.http
            .post(format!("{}/v1/events", b.base))
            .bearer_auth(token(Role::Admin))
            .header("content-type", "application/cloudevents-batch+json")
            .body(vec![b' '; handover_api::MAX_BODY + 1])
            .send()
            .await
            .unwrap(),
        413,
        "application/problem+json",
    )
    .await;
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/payload-too-large"
    );
    let (o, _) = check(
        b.http
            .get(format!("{}/fhir/r4/Patient", b.base))
            .send()
            .await
            .unwrap(),
        405,
        "application/fhir+json",
    )
    .await;
    assert_eq!(o["resourceType"], "OperationOutcome");
    assert_eq!(o["issue"][0]["code"], "not-supported");
    // A compressed body is refused as such, not as bad JSON.
    let r = b
        .http
        .post(format!("{}/v1/events", b.base))
        .bearer_auth(token(Role::Admin))
        .header("content-type", "application/cloudevents+json")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    // RFC 9110 15.5.16: the 415 names the codings that would have been accepted.
    assert_eq!(
        r.headers()
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("identity")
    );
    let (p, _) = check(r, 415, "application/problem+json").await;
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/unsupported-content-encoding"
    );
    // Answers the handlers write are left as they are.
    let r = b.journey("9434765918").await;
    assert_eq!(r.status(), 400);
    let (p, _) = check(r, 400, "application/problem+json").await;
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/invalid-nhs-number"
    );
}

/// A request that promises a large body and sends only its headers and a few bytes.
async fn unfinished_post(base: &str, path: &str, auth: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: 8000000\r\n\r\n[{{\"specversion\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    // The body never comes: an answer at all means the server did not wait for it.
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_without_a_valid_token_or_role_is_refused_before_its_body_is_read() {
    let b = Backbone::start().await;
    for path in ["/v1/events", "/fhir/r4", "/fhir/r4/Encounter"] {
        let answer = unfinished_post(&b.base, path, None).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        let answer = unfinished_post(&b.base, path, Some("not-a-token")).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: {answer}");
        let answer = unfinished_post(&b.base, path, Some(&token(Role::Broker))).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
        if path.starts_with("/fhir") {
            assert!(answer.contains("OperationOutcome"), "{path}: {answer}");
        } else {
            assert!(
                answer.contains("application/problem+json"),
                "{path}: {answer}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_the_log_is_refused_for_good_and_nothing_of_its_batch_is_stored() {
    let b = Backbone::start().await;
    let before = b.rt().log.last_sequence().await.unwrap();
    let mut huge = admitted("big-1");
    huge["data"]["ward"] = json!("W".repeat(1_100_000));
    let batch = json!([
        admitted("small-1"),
        admitted("small-2"),
        huge,
        admitted("small-3")
    ]);
    let r = b.post_events(&batch).await;
    // Not 503: resending cannot help, so the answer must not invite it.
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("retry-after").is_none());
    let p: Value = r.json().await.unwrap();
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("event 3 of 4") && detail.contains("none of them was stored"),
        "{detail}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), before);
    // The same batch without it is stored whole.
    let batch = json!([
        admitted("small-1"),
        admitted("small-2"),
        admitted("small-3")
    ]);
    assert_eq!(b.post_events(&batch).await.status(), 202);
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), before + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_more_events_than_a_request_may_hold_is_413_and_stores_nothing() {
    let b = Backbone::start().await;
    let before = b.rt().log.last_sequence().await.unwrap();
    let limit = handover_api::MAX_BATCH;
    let over: Vec<Value> = (0..=limit)
        .map(|i| admitted(&format!("many-{i}")))
        .collect();
    let r = b.post_events(&Value::Array(over)).await;
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().get("retry-after").is_none());
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/too-many-events"
    );
    assert_eq!(p["status"], 413);
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{} events", limit + 1))
            && detail.contains(&limit.to_string())
            && detail.contains("nothing was stored"),
        "{detail}"
    );
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), before);
    // The limit itself is one request.
    let at: Vec<Value> = (0..limit).map(|i| admitted(&format!("many-{i}"))).collect();
    let r = b.post_events(&Value::Array(at)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(
        b.rt().log.last_sequence().await.unwrap(),
        before + limit as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_sent_and_not_kept_is_named_in_the_answer() {
    let b = Backbone::start().await;
    let mut sent = admitted("noted-1");
    sent["partitionkey"] = json!("ward-7");
    sent["data"]["admision_method"] = json!("emergency");
    let batch = json!([admitted("plain-1"), sent]);
    let r = b.post_events(&batch).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert!(v["events"][0].get("ignored").is_none(), "{v}");
    assert_eq!(
        v["events"][1]["ignored"],
        json!(["/partitionkey", "/data/admision_method"]),
        "{v}"
    );
}
