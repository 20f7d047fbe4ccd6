//! The deployed NATS accounts (deploy/nats-server.conf, nats-accounts.conf and the generated
//! nats-permissions.conf) on a real nats-server: the Handover service runs with its user; a
//! council producer may publish council events and not hospital ones, a trust producer the
//! reverse; producers cannot read the stream; the read-only subscriber reads through its
//! own consumer only; and an event published under another type's subject is parked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use handover_api::Role;
use handover_events::subject::subject_for;
use handover_events::{Event, EventType, NhsNumber, PersonRef, PseudonymKey};
use handover_testkit::NatsServer;
use nkeys::KeyPair;
use serde_json::{json, Value};

use crate::support::{self, ev, token, Backbone, KEY_HEX};

fn deploy(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name),
    )
    .unwrap()
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "deploy file no longer has {from:?}");
    text.replacen(from, to, 1)
}

/// The users of a server running the deployed configuration: a fresh nkey for each user of
/// nats-accounts.conf, by permission set (`HANDOVER_SERVICE`, `HOSPITAL_PRODUCER`, …).
struct Users {
    url: String,
    keys: BTreeMap<String, KeyPair>,
}

impl Users {
    /// Starts nats-server with the deployed configuration files.
    fn start() -> (NatsServer, Users) {
        let server = deploy("nats-server.conf");
        let server = replace_once(
            &server,
            "listen: 127.0.0.1:4222",
            "listen: 127.0.0.1:{{port}}",
        );
        let server = replace_once(
            &server,
            "http: 127.0.0.1:8222",
            "http: 127.0.0.1:{{monitor_port}}",
        );
        let server = replace_once(
            &server,
            "store_dir: /var/lib/nats-server",
            "store_dir: \"{{store_dir}}\"",
        );
        let server = replace_once(&server, "max_file_store: 50G", "max_file_store: 1G");
        let mut keys = BTreeMap::new();
        let accounts: Vec<String> = deploy("nats-accounts.conf")
            .lines()
            .map(|line| {
                let (Some(k), Some(p)) = (line.find("nkey: "), line.find("permissions: $")) else {
                    return line.to_string();
                };
                let example = &line[k + 6..k + 6 + 56];
                let set: String = line[p + 14..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let fresh = KeyPair::new_user();
                let line = line.replace(example, &fresh.public_key());
                assert!(keys.insert(set, fresh).is_none(), "one user per set");
                line
            })
            .collect();
        assert_eq!(
            keys.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "ANALYTICS_READER",
                "COUNCIL_PRODUCER",
                "HANDOVER_SERVICE",
                "HOSPITAL_PRODUCER"
            ]
        );
        let nats = NatsServer::start_with_config(&[
            ("nats-server.conf", &server),
            ("nats-accounts.conf", &accounts.join("\n")),
            ("nats-permissions.conf", &deploy("nats-permissions.conf")),
        ]);
        let users = Users {
            url: nats.url(),
            keys,
        };
        (nats, users)
    }

    fn seed(&self, set: &str) -> String {
        self.keys[set].seed().unwrap()
    }

    /// A client of user `set` with `inbox` as its inbox prefix, collecting server errors.
    async fn client(&self, set: &str, inbox: Option<&str>) -> (async_nats::Client, Errors) {
        let errors = Errors::default();
        let e = errors.clone();
        let mut opts =
            async_nats::ConnectOptions::with_nkey(self.seed(set)).event_callback(move |event| {
                let e = e.clone();
                async move {
                    if let async_nats::Event::ServerError(err) = event {
                        e.0.lock().unwrap().push(err.to_string());
                    }
                }
            });
        if let Some(prefix) = inbox {
            opts = opts.custom_inbox_prefix(prefix);
        }
        (opts.connect(&self.url).await.unwrap(), errors)
    }
}

/// Server errors (permission violations) a client was sent.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl Errors {
    async fn wait_for(&self, what: &str) {
        for _ in 0..200 {
            if self.0.lock().unwrap().iter().any(|e| e.contains(what)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no server error {what:?}; got {:?}", self.0.lock().unwrap());
    }
}

fn person_key(nhs: &str) -> String {
    let bytes: Vec<u8> = (0..KEY_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_HEX[i..i + 2], 16).unwrap())
        .collect();
    PseudonymKey::new(bytes)
        .unwrap()
        .person_key(&PersonRef::Nhs(NhsNumber::parse(nhs).unwrap()))
}

/// Publishes `event` as a direct producer would: under `subject`, with the `Nats-Msg-Id`
/// Handover derives from source and id, waiting (briefly) for the JetStream ack.
async fn publish(js: &jetstream::Context, subject: String, event: &Value) -> Result<u64, String> {
    let e = Event::from_json(event.clone()).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", handover_nats::message_id(&e).as_str());
    let ack = js
        .publish_with_headers(subject, headers, e.to_json_vec().into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

const NHS: &str = "9434765919";
const PAS: &str = "urn:ods:RX1:pas";
const LEEDS: &str = "urn:gss:E08000035:mosaic";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_nats_accounts_let_each_producer_publish_only_its_sectors_events() {
    let (nats, users) = tokio::task::spawn_blocking(Users::start).await.unwrap();

    // The Handover service runs as its user: creates its streams and consumers, stores,
    // projects, audits.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&nats.url(), &dir.path().join("store"));
    let seed_file = dir.path().join("nats-handover.nk");
    std::fs::write(&seed_file, users.seed("HANDOVER_SERVICE")).unwrap();
    cfg.nats.nkey_seed_file = Some(seed_file);
    let b = Backbone::with_config(nats, dir, &cfg).await;
    let admitted = ev(
        "n1",
        PAS,
        "discharge.admitted",
        NHS,
        "2026-11-02T09:14:00Z",
        json!({"encounter_id":"E1","site":"RX1CC","admitted_at":"2026-11-02T09:14:00Z","responsible_council":"E08000035"}),
    );
    assert_eq!(b.post_events(&admitted).await.status(), 202);
    b.caught_up().await;
    assert_eq!(b.journey(NHS).await.status(), 200, "read, and audited");
    let audit: Value = b
        .http
        .get(format!("{}/v1/audit?nhs_number={NHS}", b.base))
        .bearer_auth(token(Role::Auditor))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["count"], 1, "the audit stream is readable");
    // without credentials nobody gets in
    assert!(async_nats::connect(b.nats.url()).await.is_err());

    let key = person_key(NHS);
    let last = || async { b.rt().log.last_sequence().await.unwrap() };
    let accepted = ev(
        "n2",
        LEEDS,
        "referral.accepted",
        NHS,
        "2026-11-02T15:00:00Z",
        json!({"referral_id": "R1"}),
    );
    let discharged = |source: &str| {
        ev(
            "n3",
            source,
            "discharge.discharged",
            NHS,
            "2026-11-06T11:00:00Z",
            json!({"encounter_id": "E1", "discharged_at": "2026-11-06T11:00:00Z"}),
        )
    };

    // The council's producer: its referral answer is stored (JetStream ack) …
    let (council, council_errors) = users
        .client("COUNCIL_PRODUCER", Some("_INBOX_PRODUCER"))
        .await;
    let mut cjs = jetstream::new(council.clone());
    cjs.set_timeout(Duration::from_secs(2));
    let seq = publish(
        &cjs,
        subject_for(EventType::ReferralAccepted, &key),
        &accepted,
    )
    .await
    .unwrap();
    assert_eq!(seq, last().await);
    // … a hospital discharge is refused by the server, and nothing is stored
    let before = last().await;
    let refused = publish(
        &cjs,
        subject_for(EventType::Discharged, &key),
        &discharged(LEEDS),
    )
    .await;
    assert!(refused.is_err(), "no ack for a refused publish");
    council_errors
        .wait_for("Permissions Violation for Publish to \"care.discharge.discharged.")
        .await;
    assert_eq!(last().await, before);
    // it cannot read the stream: neither subscribe to care.> nor use the JetStream API
    let _sub = council.subscribe("care.>").await.unwrap();
    council.flush().await.unwrap();
    council_errors
        .wait_for("Permissions Violation for Subscription to \"care.>\"")
        .await;
    assert!(cjs.get_stream("HANDOVER").await.is_err());
    council_errors
        .wait_for("Permissions Violation for Publish to \"$JS.API.STREAM.INFO.HANDOVER\"")
        .await;

    // The trust's producer: the reverse.
    let (trust, trust_errors) = users
        .client("HOSPITAL_PRODUCER", Some("_INBOX_PRODUCER"))
        .await;
    let mut tjs = jetstream::new(trust);
    tjs.set_timeout(Duration::from_secs(2));
    let seq = publish(
        &tjs,
        subject_for(EventType::Discharged, &key),
        &discharged(PAS),
    )
    .await
    .unwrap();
    assert_eq!(seq, last().await);
    let before = last().await;
    let started = ev(
        "n4",
        PAS,
        "care-package.started",
        NHS,
        "2026-11-06T12:00:00Z",
        json!({"package_id": "P1", "started_on": "2026-11-06"}),
    );
    assert!(
        publish(&tjs, subject_for(EventType::PackageStarted, &key), &started)
            .await
            .is_err()
    );
    trust_errors
        .wait_for("Permissions Violation for Publish to \"care.care-package.started.")
        .await;
    assert_eq!(last().await, before);

    // A producer that keeps the default inbox prefix never sees its acks (the service's
    // _INBOX is not open to it): the event is stored, but the producer cannot know.
    let before = last().await;
    let (plain, plain_errors) = users.client("HOSPITAL_PRODUCER", None).await;
    let mut pjs = jetstream::new(plain);
    pjs.set_timeout(Duration::from_secs(2));
    let transferred = ev(
        "n5",
        PAS,
        "discharge.transferred",
        NHS,
        "2026-11-03T10:00:00Z",
        json!({"encounter_id": "E1", "ward": "Ward 9"}),
    );
    assert!(publish(
        &pjs,
        subject_for(EventType::Transferred, &key),
        &transferred
    )
    .await
    .is_err());
    plain_errors
        .wait_for("Permissions Violation for Subscription to \"_INBOX.")
        .await;
    assert_eq!(last().await, before + 1);

    // The server checks subjects only: a council publishing a hospital admission under a
    // council subject gets it stored, and the projection parks it.
    let forged = ev(
        "n6",
        LEEDS,
        "discharge.admitted",
        NHS,
        "2026-11-07T09:00:00Z",
        json!({"encounter_id":"E9","site":"RX1CC","admitted_at":"2026-11-07T09:00:00Z"}),
    );
    let forged_seq = publish(
        &cjs,
        subject_for(EventType::ReferralAccepted, &key),
        &forged,
    )
    .await
    .unwrap();
    // … and a referral answer claiming an NHS source (the sector rule) is parked too
    let as_trust = ev(
        "n7",
        PAS,
        "referral.accepted",
        NHS,
        "2026-11-07T10:00:00Z",
        json!({"referral_id": "R1"}),
    );
    let seq = publish(
        &cjs,
        subject_for(EventType::ReferralAccepted, &key),
        &as_trust,
    )
    .await
    .unwrap();
    b.caught_up().await;
    assert_eq!(b.rt().journey_progress.borrow().parked, 2);
    let parked = b.rt().log.parked_log().await.unwrap();
    let records = handover::ops::parked_records(&parked).await.unwrap();
    let kinds: Vec<(u64, &str)> = records
        .iter()
        .map(|(_, r)| (r.sequence, r.kind.as_str()))
        .collect();
    assert_eq!(kinds, [(forged_seq, "subject"), (seq, "source")]);
    let j: Value = b.journey(NHS).await.json().await.unwrap();
    let timeline: Vec<&str> = j["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        timeline,
        [
            "handover.discharge.admitted.v1",
            "handover.referral.accepted.v1",
            "handover.discharge.transferred.v1",
            "handover.discharge.discharged.v1"
        ],
        "the direct producers' events are projected; the forged ones are not"
    );
    assert_eq!(j["stays"].as_array().map(Vec::len), Some(1));

    // The read-only subscriber reads every event through its own durable consumer …
    let (reader, reader_errors) = users
        .client("ANALYTICS_READER", Some("_INBOX_ANALYTICS"))
        .await;
    let rjs = jetstream::new(reader.clone());
    let stream = rjs.get_stream("HANDOVER").await.unwrap();
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            "analytics",
            jetstream::consumer::pull::Config {
                durable_name: Some("analytics".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut read = 0;
    while let Some(m) = messages.next().await {
        m.unwrap().ack().await.unwrap();
        read += 1;
    }
    assert_eq!(read as u64, last().await);
    // … and nothing else: not the projection's consumer, not a purge, not a publish
    let mut rjs_short = jetstream::new(reader.clone());
    rjs_short.set_timeout(Duration::from_secs(2));
    let stream = rjs_short.get_stream("HANDOVER").await.unwrap();
    assert!(stream
        .get_or_create_consumer(
            "journey",
            jetstream::consumer::pull::Config {
                durable_name: Some("journey".into()),
                ..Default::default()
            },
        )
        .await
        .is_err());
    reader_errors
        .wait_for("Permissions Violation for Publish to \"$JS.API.CONSUMER.")
        .await;
    assert!(stream.purge().await.is_err());
    reader_errors
        .wait_for("Permissions Violation for Publish to \"$JS.API.STREAM.PURGE.HANDOVER\"")
        .await;
    reader
        .publish("care.person.linked.x", "{}".into())
        .await
        .unwrap();
    reader.flush().await.unwrap();
    reader_errors
        .wait_for("Permissions Violation for Publish to \"care.person.linked.x\"")
        .await;
    assert_eq!(b.rt().log.last_sequence().await.unwrap(), seq);
}
