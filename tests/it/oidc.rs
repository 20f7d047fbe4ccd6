//! OpenID Connect bearer tokens against the real server: tokens minted here with the test
//! keys in tests/fixtures/oidc (public, for tests only) and sent over HTTP; JWKS from a file
//! and from a real local HTTP server (an axum router on 127.0.0.1:0), including key
//! rotation and a JWKS URL that fails.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use handover::runtime::Runtime;
use handover_api::oidc::OidcConfig;
use handover_api::Role;
use handover_testkit::NatsServer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::support::{self, ev, token, Backbone};

const ISSUER: &str = "https://idp.rx1.test";
const AUDIENCE: &str = "api://handover";
const USER: &str = "jane.doe@rx1.test";
const NHS: &str = "9434765919";
const PAS: &str = "urn:ods:RX1:pas";

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/oidc")
        .join(name)
}

/// The DER inside a PEM fixture.
fn der(name: &str) -> Vec<u8> {
    let pem = std::fs::read_to_string(fixture(name)).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

/// A signing key of the fixtures: `rsa-1`, `rsa-2` (RS256) or `ec-1` (ES256).
fn signer(name: &str) -> (EncodingKey, Algorithm, &'static str) {
    match name {
        "rsa-1" => (
            EncodingKey::from_rsa_der(&der("rsa-1.key.pem")),
            Algorithm::RS256,
            "test-rsa-1",
        ),
        "rsa-2" => (
            EncodingKey::from_rsa_der(&der("rsa-2.key.pem")),
            Algorithm::RS256,
            "test-rsa-2",
        ),
        "ec-1" => (
            EncodingKey::from_ec_der(&der("ec-1.key.pem")),
            Algorithm::ES256,
            "test-ec-1",
        ),
        other => panic!("no test key {other}"),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims a provider would put in a discharge-team user's access token.
fn claims(roles: Value) -> Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": USER,
        "iat": now(), "nbf": now() - 5, "exp": now() + 600,
        "roles": roles,
    })
}

fn mint_with(key: &str, kid: &str, claims: &Value) -> String {
    let (k, alg, _) = signer(key);
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &k).unwrap()
}

fn mint(key: &str, claims: &Value) -> String {
    mint_with(key, signer(key).2, claims)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn provider(jwks_file: Option<std::path::PathBuf>, jwks_url: Option<String>) -> OidcConfig {
    let mut c: OidcConfig = serde_json::from_value(json!({
        "organisation": "RX1", "issuer": ISSUER, "audience": AUDIENCE,
    }))
    .unwrap();
    c.jwks_file = jwks_file;
    c.jwks_url = jwks_url;
    c
}

/// A backbone whose API also accepts tokens of `providers`.
async fn start(providers: Vec<OidcConfig>) -> Backbone {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&nats.url(), &dir.path().join("store"));
    cfg.oidc = providers;
    let b = Backbone::with_config(nats, dir, &cfg).await;
    let events = json!([
        ev(
            "o1",
            PAS,
            "person.identified",
            NHS,
            "2026-11-02T09:00:00Z",
            json!({"nhs_number_status":"01","local_ids":[{"system":"https://rx1.nhs.uk/id/mrn","value":"RX1-1"}],"given_name":"Jane","family_name":"Example"})
        ),
        ev(
            "o2",
            PAS,
            "discharge.admitted",
            NHS,
            "2026-11-02T09:14:00Z",
            json!({"encounter_id":"E1","site":"RX1CC","ward":"Ward 7","admitted_at":"2026-11-02T09:14:00Z","responsible_council":"E08000035"})
        ),
    ]);
    let r = b.post_events(&events).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    b.caught_up().await;
    b
}

async fn journey(b: &Backbone, bearer: &str) -> reqwest::Response {
    b.http
        .get(format!("{}/v1/persons/{NHS}/journey", b.base))
        .bearer_auth(bearer)
        .header("handover-access-reason", "direct-care")
        .send()
        .await
        .unwrap()
}

/// Asserts a 401 problem with an `invalid_token` challenge whose reason contains `why`.
async fn assert_invalid_token(r: reqwest::Response, why: &str) {
    assert_eq!(r.status(), 401, "expected 401 ({why})");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"handover\", error=\"invalid_token\""),
        "{challenge}"
    );
    let p: Value = r.json().await.unwrap();
    assert_eq!(
        p["type"],
        "https://handover.example.org/problems/invalid-token"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains(why), "{detail:?} should say {why:?}");
    assert!(challenge.contains(detail), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_tokens_are_validated_and_audited_like_configured_tokens() {
    let logs = crate::governance::captured_logs();
    let b = start(vec![provider(Some(fixture("jwks.json")), None)]).await;
    let team = claims(json!(["discharge-team"]));

    // valid RS256 and ES256 tokens: the journey, and an audit record naming the user
    let r = journey(&b, &mint("rsa-1", &team)).await;
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(
        j["current_stay"]["ward"], "Ward 7",
        "the discharge team's view"
    );
    assert_eq!(journey(&b, &mint("ec-1", &team)).await.status(), 200);
    // the role claim may be one string too
    let single = claims(json!("discharge-team"));
    assert_eq!(journey(&b, &mint("rsa-1", &single)).await.status(), 200);
    // an auditor signed in through the provider reads who viewed the record
    let mut audit_claims = claims(json!(["auditor"]));
    audit_claims["sub"] = json!("ig.lead@rx1.test");
    let r = b
        .http
        .get(format!("{}/v1/audit?nhs_number={NHS}", b.base))
        .bearer_auth(mint("ec-1", &audit_claims))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let a: Value = r.json().await.unwrap();
    let rec = &a["records"][0];
    assert_eq!(rec["user"], USER);
    assert_eq!(rec["organisation"], "RX1");
    assert_eq!(rec["role"], "discharge-team");
    assert_eq!(rec["action"], "journey");
    assert_eq!(a["count"], 3);

    // refused: 401 with the reason
    let mut expired = team.clone();
    expired["exp"] = json!(now() - 3600);
    expired["iat"] = json!(now() - 7200);
    expired["nbf"] = json!(now() - 7200);
    assert_invalid_token(journey(&b, &mint("rsa-1", &expired)).await, "expired").await;
    let mut early = team.clone();
    early["nbf"] = json!(now() + 3600);
    assert_invalid_token(journey(&b, &mint("rsa-1", &early)).await, "not valid yet").await;
    let mut wrong_iss = team.clone();
    wrong_iss["iss"] = json!("https://idp.elsewhere.test");
    assert_invalid_token(journey(&b, &mint("rsa-1", &wrong_iss)).await, "issuer").await;
    let mut wrong_aud = team.clone();
    wrong_aud["aud"] = json!(["api://something-else"]);
    assert_invalid_token(journey(&b, &mint("rsa-1", &wrong_aud)).await, "audience").await;
    let mut no_exp = team.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_invalid_token(journey(&b, &mint("rsa-1", &no_exp)).await, "required claim").await;
    let mut stringly = team.clone();
    stringly["nbf"] = json!("99999999999");
    assert_invalid_token(
        journey(&b, &mint("rsa-1", &stringly)).await,
        "required claim",
    )
    .await;

    // a tampered signature, and a payload changed after signing
    let good = mint("rsa-1", &team);
    let (head, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &sig[1..]);
    assert_invalid_token(journey(&b, &tampered).await, "signature does not verify").await;
    let parts: Vec<&str> = good.split('.').collect();
    let mut admin = team.clone();
    admin["roles"] = json!(["admin"]);
    let swapped = format!("{}.{}.{}", parts[0], b64(&admin), parts[2]);
    assert_invalid_token(journey(&b, &swapped).await, "signature does not verify").await;

    // a key the issuer never published; another key claiming a published kid
    assert_invalid_token(
        journey(&b, &mint("rsa-2", &team)).await,
        "signing key is not known",
    )
    .await;
    assert_invalid_token(
        journey(&b, &mint_with("rsa-2", "test-rsa-1", &team)).await,
        "signature does not verify",
    )
    .await;

    // forged: unsigned (alg none), and HS256 with the public key as the shared secret
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&team)
    );
    assert_invalid_token(journey(&b, &none).await, "algorithm is not accepted").await;
    for secret in [
        std::fs::read(fixture("rsa-1.jwk.json")).unwrap(),
        jwk("rsa-1.jwk.json")["n"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    ] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("test-rsa-1".into());
        let forged = jsonwebtoken::encode(&h, &team, &EncodingKey::from_secret(&secret)).unwrap();
        assert_invalid_token(journey(&b, &forged).await, "algorithm is not accepted").await;
    }
    // not a JWT at all, but shaped like one
    assert_invalid_token(journey(&b, "abc.def.ghi").await, "not a well-formed JWT").await;

    // valid, but no Handover role, or several: 403
    for roles in [json!(["nurse"]), json!([]), json!(["broker", "admin"])] {
        let r = journey(&b, &mint("rsa-1", &claims(roles.clone()))).await;
        assert_eq!(r.status(), 403, "{roles}");
        let p: Value = r.json().await.unwrap();
        assert_eq!(p["type"], "https://handover.example.org/problems/no-role");
    }
    let mut no_roles = team.clone();
    no_roles.as_object_mut().unwrap().remove("roles");
    assert_eq!(journey(&b, &mint("rsa-1", &no_roles)).await.status(), 403);
    // a role that does not read people: 403 on the journey, but it may publish its own
    // organisation's events
    let integration = mint("rsa-1", &claims(json!(["integration"])));
    let r = journey(&b, &integration).await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert_eq!(p["type"], "https://handover.example.org/problems/forbidden");
    let post = |bearer: String, path: &'static str, ct: &'static str, body: String| {
        let b = &b;
        async move {
            b.http
                .post(format!("{}{path}", b.base))
                .bearer_auth(bearer)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let transfer = ev(
        "o3",
        PAS,
        "discharge.transferred",
        NHS,
        "2026-11-03T10:00:00Z",
        json!({"encounter_id": "E1", "ward": "Ward 9"}),
    );
    let r = post(
        integration.clone(),
        "/v1/events",
        "application/cloudevents+json",
        transfer.to_string(),
    )
    .await;
    assert_eq!(r.status(), 202);
    let as_council = ev(
        "o4",
        "urn:gss:E08000035:mosaic",
        "referral.accepted",
        NHS,
        "2026-11-03T10:00:00Z",
        json!({"referral_id": "R1"}),
    );
    let r = post(
        integration.clone(),
        "/v1/events",
        "application/cloudevents+json",
        as_council.to_string(),
    )
    .await;
    assert_eq!(r.status(), 403, "the provider's organisation is RX1");
    // FHIR answers an invalid token with an OperationOutcome and the same challenge
    let r = post(
        mint("rsa-1", &expired),
        "/fhir/r4/Patient",
        "application/fhir+json",
        "{}".into(),
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
    // configured tokens still work beside the provider
    assert_eq!(journey(&b, &token(Role::DischargeTeam)).await.status(), 200);

    // the web UI signs in with the provider's token too
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .post(format!("{}/ui/login", b.base))
        .form(&[("token", mint("ec-1", &team))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = browser
        .get(format!("{}/ui/delays", b.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = browser
        .post(format!("{}/ui/login", b.base))
        .form(&[("token", mint("rsa-1", &expired))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("expired"));

    // refusals are logged by reason; tokens and the user claim never are
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    assert!(
        log_text.contains("bearer token refused"),
        "the capture saw them"
    );
    assert!(!log_text.contains(USER));
    for t in [mint("rsa-1", &team), tampered, forged_none_payload(&team)] {
        for part in t.split('.').skip(1).filter(|p| p.len() > 8) {
            assert!(!log_text.contains(part), "a token reached the log");
        }
    }
}

/// The claims segment every token minted from `claims` shares.
fn forged_none_payload(claims: &Value) -> String {
    format!("x.{}.", b64(claims))
}

/// A JWKS endpoint whose answer the test changes: (status, body), and a hit counter.
#[derive(Clone)]
struct Idp {
    answer: Arc<Mutex<(u16, Value)>>,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

impl Idp {
    async fn start() -> (Idp, String) {
        let idp = Idp {
            answer: Arc::new(Mutex::new((503, json!({})))),
            hits: Arc::default(),
        };
        let state = idp.clone();
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    state.hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (status, body) = state.answer.lock().unwrap().clone();
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body.to_string(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/keys", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (idp, url)
    }

    fn serve(&self, status: u16, keys: &[&str]) {
        let keys: Vec<Value> = keys.iter().map(|k| jwk(&format!("{k}.jwk.json"))).collect();
        *self.answer.lock().unwrap() = (status, json!({ "keys": keys }));
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_keys_from_a_jwks_url_arrive_late_rotate_and_survive_a_failing_url() {
    let (idp, url) = Idp::start().await;
    let mut p = provider(None, Some(url));
    // no wait between fetches for unknown key ids, so the test need not sleep
    p.jwks_min_refetch_secs = 0;
    // the provider is down at start-up: the backbone starts anyway
    let b = start(vec![p]).await;
    assert!(idp.hits() >= 1, "fetched at start-up");
    let team = claims(json!(["discharge-team"]));
    assert_invalid_token(
        journey(&b, &mint("rsa-1", &team)).await,
        "signing keys are not available",
    )
    .await;

    // the keys arrive: the next token fetches them
    idp.serve(200, &["rsa-1"]);
    assert_eq!(journey(&b, &mint("rsa-1", &team)).await.status(), 200);
    // a key id the provider has not published yet is refused …
    assert_invalid_token(
        journey(&b, &mint("rsa-2", &team)).await,
        "signing key is not known",
    )
    .await;
    // … until it rotates it in: the unknown kid triggers a fetch
    idp.serve(200, &["rsa-1", "rsa-2", "ec-1"]);
    let before = idp.hits();
    assert_eq!(journey(&b, &mint("rsa-2", &team)).await.status(), 200);
    assert_eq!(idp.hits(), before + 1, "one fetch for the new key id");
    assert_eq!(journey(&b, &mint("ec-1", &team)).await.status(), 200);
    // known keys need no fetch
    let before = idp.hits();
    assert_eq!(journey(&b, &mint("rsa-1", &team)).await.status(), 200);
    assert_eq!(idp.hits(), before);

    // the provider fails: a fetch for an unknown kid fails, the cached keys stay
    idp.serve(500, &[]);
    let before = idp.hits();
    assert_invalid_token(
        journey(&b, &mint_with("rsa-1", "test-rsa-9", &team)).await,
        "signing key is not known",
    )
    .await;
    assert_eq!(idp.hits(), before + 1);
    for key in ["rsa-1", "rsa-2", "ec-1"] {
        assert_eq!(journey(&b, &mint(key, &team)).await.status(), 200, "{key}");
    }
    // a reachable provider answering nonsense does not replace them either
    *idp.answer.lock().unwrap() = (200, json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}));
    let _ = journey(&b, &mint_with("rsa-1", "test-rsa-9", &team)).await;
    assert_eq!(journey(&b, &mint("rsa-2", &team)).await.status(), 200);
    // a key the provider withdraws is refused once the provider's set is fetched again
    idp.serve(200, &["rsa-2"]);
    let _ = journey(&b, &mint_with("rsa-1", "test-rsa-9", &team)).await;
    assert_invalid_token(
        journey(&b, &mint("rsa-1", &team)).await,
        "signing key is not known",
    )
    .await;
    assert_eq!(journey(&b, &mint("rsa-2", &team)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_jwks_file_stops_start_up_with_the_reason() {
    let nats = tokio::task::spawn_blocking(NatsServer::start)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::config(&nats.url(), &dir.path().join("store"));
    cfg.oidc = vec![provider(Some(fixture("README.md")), None)];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match Runtime::start(&cfg, Some(listener)).await {
        Ok(_) => panic!("started with a bad JWKS file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("not a JWKS document"), "{err}");
    assert!(err.contains(ISSUER), "{err}");
    // and with an algorithm a public key must never be used for
    let mut p = provider(Some(fixture("jwks.json")), None);
    p.algorithms = vec![Algorithm::HS256];
    cfg.oidc = vec![p];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = match Runtime::start(&cfg, Some(listener)).await {
        Ok(_) => panic!("started with HS256"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("HS256 is refused"), "{err}");
}
