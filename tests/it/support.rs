//! A whole backbone per test: nats-server, sled in a temp dir, the runtime and an HTTP client.

use std::time::Duration;

use handover::config::Config;
use handover::runtime::Runtime;
use handover_api::{token_digest, Role, TokenConfig};
use handover_testkit::NatsServer;
use serde_json::{json, Value};

pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The pseudonym key of [`KEY_HEX`], as `handover` reads it from the key file.
pub fn pseudonym_key() -> handover_events::PseudonymKey {
    let bytes: Vec<u8> = (0..KEY_HEX.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_HEX[i..i + 2], 16).unwrap())
        .collect();
    handover_events::PseudonymKey::new(bytes).unwrap()
}

/// Organisations with test tokens: two trusts and two councils.
pub const ORGS: [&str; 4] = ["RX1", "RR8", "E08000035", "E08000032"];

/// The token of `role` at `org`.
pub fn token_for(role: Role, org: &str) -> String {
    format!("test-token-{}-{org}", role.as_str())
}

/// The token of `role` at its usual organisation: brokers and social workers at Leeds
/// council (E08000035), everyone else at the RX1 trust.
pub fn token(role: Role) -> String {
    match role {
        Role::Broker | Role::SocialWorker => token_for(role, "E08000035"),
        _ => token_for(role, "RX1"),
    }
}

pub fn config(nats_url: &str, store: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.nats.url = Some(nats_url.to_string());
    cfg.store.path = store.to_path_buf();
    let key_file = store.with_extension("key");
    std::fs::write(&key_file, KEY_HEX).unwrap();
    cfg.pseudonym.key_file = Some(key_file);
    for role in Role::ALL {
        for org in ORGS {
            cfg.tokens.push(TokenConfig {
                name: format!("test-{}-{org}", role.as_str()),
                organisation: org.into(),
                role,
                token_sha256: token_digest(&token_for(role, org)),
            });
        }
    }
    cfg
}

pub struct Backbone {
    pub nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub rt: Option<Runtime>,
    pub http: reqwest::Client,
    pub base: String,
}

impl Backbone {
    pub async fn start() -> Backbone {
        let nats = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut b = Backbone {
            nats,
            dir,
            rt: None,
            http: reqwest::Client::new(),
            base: String::new(),
        };
        b.start_runtime().await;
        b
    }

    /// A backbone whose runtime runs `cfg` (a custom configuration) on `nats`, with `dir`
    /// holding its store.
    pub async fn with_config(nats: NatsServer, dir: tempfile::TempDir, cfg: &Config) -> Backbone {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rt = Runtime::start(cfg, Some(listener)).await.unwrap();
        Backbone {
            base: format!("http://{}", rt.api_addr.unwrap()),
            nats,
            dir,
            rt: Some(rt),
            http: reqwest::Client::new(),
        }
    }

    pub fn config(&self) -> Config {
        config(&self.nats.url(), &self.dir.path().join("store"))
    }

    pub async fn start_runtime(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rt = Runtime::start(&self.config(), Some(listener))
            .await
            .unwrap();
        self.base = format!("http://{}", rt.api_addr.unwrap());
        self.rt = Some(rt);
    }

    pub fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }

    pub async fn post_events(&self, body: &Value) -> reqwest::Response {
        let ct = if body.is_array() {
            "application/cloudevents-batch+json"
        } else {
            "application/cloudevents+json"
        };
        self.http
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(token(Role::Admin))
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Waits until everything in the stream is projected.
    pub async fn caught_up(&self) {
        let last = self.rt().log.last_sequence().await.unwrap();
        self.rt()
            .projected(last, Duration::from_secs(30))
            .await
            .unwrap();
    }

    pub async fn journey(&self, nhs: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/v1/persons/{nhs}/journey", self.base))
            .bearer_auth(token(Role::DischargeTeam))
            .header("handover-access-reason", "direct-care")
            .send()
            .await
            .unwrap()
    }
}

/// A CloudEvent of `type` about `nhs`.
pub fn ev(id: &str, source: &str, ty: &str, nhs: &str, time: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": source,
        "type": format!("handover.{ty}.v1"), "subject": nhs, "time": time, "data": data
    })
}

/// `n` valid NHS numbers (Modulus 11) after `base` (nine digits).
pub fn nhs_numbers(mut base: u64, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        base += 1;
        let nine: Vec<u8> = base.to_string().bytes().map(|b| b - b'0').collect();
        if let Some(c) = handover_events::nhs::check_digit(&nine) {
            out.push(format!("{base}{c}"));
        }
    }
    out
}

/// Opens a read-model store once a previous (killed) owner's background flush has let go of
/// it (in production a killed process releases the lock at once).
pub fn reopen(path: &std::path::Path) -> handover_store::Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match handover::runtime::open_store(&handover::config::StoreConfig {
            path: path.to_path_buf(),
            ..Default::default()
        }) {
            Ok(s) => return s,
            Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("store still locked: {e:#}"),
        }
    }
}

/// Every entry of the journey tree, with each timeline chunk split into its events (under
/// `t/<stream sequence>`, the event as stored): chunks follow the batches, which differ
/// between a resumed or rebuilt store and a fresh replay, while the events must not.
pub fn snapshot(store: &handover_store::Store) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    journey_entries(&store.tree("journey").unwrap())
}

/// The entries of a journey tree as [`snapshot`] gives them.
pub fn journey_entries(
    tree: &handover_store::Tree,
) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    for r in tree.scan_prefix(b"") {
        let (k, v) = r.unwrap();
        if !k.starts_with(b"t/") {
            out.insert(k, v);
            continue;
        }
        let events = handover_projections::journeys::timeline_events(&k, &v)
            .unwrap_or_else(|| panic!("a timeline chunk that does not decode"));
        for (seq, raw) in events {
            let mut key = b"t/".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            assert!(out.insert(key, raw).is_none(), "event {seq} stored twice");
        }
    }
    out
}

/// The value of `series` (its name and labels, as written) in a Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// `GET {base}/readyz`: its status and body (the request times out after 5 s).
pub async fn readyz(http: &reqwest::Client, base: &str) -> (u16, String) {
    let r = http
        .get(format!("{base}/readyz"))
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}
