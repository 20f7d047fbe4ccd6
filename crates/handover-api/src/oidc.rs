//! OpenID Connect bearer tokens: JSON Web Tokens issued by an organisation's identity
//! provider, checked against the provider's issuer, audience and signing keys.
//!
//! Each configured provider (`[[oidc]]` in `handover.toml`, [`OidcConfig`]) belongs to one
//! organisation. A token is routed to the provider named by its (not yet trusted) `iss`
//! claim, then verified: signature with a key from the provider's JWKS (the header's `kid`,
//! an accepted algorithm that fits the key), `iss`, `aud`, `exp` (required) and `nbf`, with a
//! clock leeway. The role comes from a claim (`roles` by default, a string or an array)
//! holding exactly one Handover role; the user recorded in the audit from another (`sub`).
//!
//! Signing keys come from a JWKS file (read at start-up; a bad file is a start-up error) or
//! a JWKS URL: fetched at start-up, every `jwks_refresh_secs`, and when a token names a key
//! id the cache does not hold (at most once per `jwks_min_refetch_secs`). A failed fetch
//! keeps the keys already held. While a provider has no keys (its URL unreachable since
//! start-up), its tokens are refused with `401` and the fetch is retried.
//!
//! Tokens and claims are never logged; refusals are `401` with `error="invalid_token"` and a
//! short reason that names no claim value.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, Validation};

/// A JWS signature algorithm (`RS256`, `ES256`, …), as named in `algorithms`.
pub use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::auth::{Caller, Role};
use crate::problem::ApiError;

/// One identity provider (`[[oidc]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The organisation (ODS code of a trust, GSS code of a council) every user of this
    /// provider belongs to.
    pub organisation: String,
    /// The issuer, exactly as in the tokens' `iss` claim.
    pub issuer: String,
    /// The audience Handover is registered as (the tokens' `aud` must include it).
    pub audience: String,
    /// A JWKS file with the provider's signing keys (exactly one of this and `jwks_url`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The provider's JWKS URL (`jwks_uri` of its discovery document).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The claim holding the user's role (a string, space-separated names, or an array);
    /// a dotted path such as `realm_access.roles` reaches into objects. Default `roles`.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Claim values mapped to Handover roles; without it, the values are Handover role
    /// names (`discharge-team`, `broker`, …). Values mapped to no role are ignored.
    #[serde(default)]
    pub role_map: BTreeMap<String, Role>,
    /// The claim naming the user in the access audit. Default `sub`.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Accepted signature algorithms. Default `["RS256", "ES256"]`; HMAC (`HS*`) is refused
    /// (a public key must never serve as a shared secret), and `none` is not an algorithm.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<Algorithm>,
    /// Clock leeway for `exp` and `nbf`, in seconds. Default 60.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// How often a JWKS URL is fetched again, in seconds. Default 600.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// Shortest time between fetches triggered by an unknown key id, and between retries
    /// while no keys are held, in seconds. Default 30.
    #[serde(default = "default_min_refetch")]
    pub jwks_min_refetch_secs: u64,
}

fn default_role_claim() -> String {
    "roles".into()
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_algorithms() -> Vec<Algorithm> {
    vec![Algorithm::RS256, Algorithm::ES256]
}
fn default_leeway() -> u64 {
    60
}
fn default_refresh() -> u64 {
    600
}
fn default_min_refetch() -> u64 {
    30
}

/// Fetches a JWKS document by URL; supplied by the binary (the API crate does no client IO).
pub type JwksFetcher =
    Arc<dyn Fn(String) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// Why an identity provider's configuration or keys were refused at start-up.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The configuration is inconsistent.
    #[error("[[oidc]] issuer {issuer:?}: {message}")]
    Config {
        /// The provider's issuer.
        issuer: String,
        /// What is wrong.
        message: String,
    },
    /// The JWKS file cannot be read.
    #[error("[[oidc]] issuer {issuer:?}: cannot read the JWKS file {path}: {source}")]
    ReadJwks {
        /// The provider's issuer.
        issuer: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The JWKS holds no usable signing key.
    #[error("[[oidc]] issuer {issuer:?}: {message}")]
    Jwks {
        /// The provider's issuer.
        issuer: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a token was refused: each reason is specific but names no claim value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url segments holding JSON.
    #[error("the bearer token is not a well-formed JWT")]
    Malformed,
    /// The header's algorithm is not accepted (including `none` and `HS*`).
    #[error("the token's signature algorithm is not accepted")]
    Algorithm,
    /// No provider has the token's issuer.
    #[error("the token's issuer is not a configured identity provider")]
    UnknownIssuer,
    /// The audience does not include Handover's.
    #[error("the token is not issued for this service (audience)")]
    WrongAudience,
    /// Past `exp` (plus leeway).
    #[error("the token has expired")]
    Expired,
    /// Before `nbf` (less leeway).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// No key of the issuer has the token's key id.
    #[error("the token's signing key is not known to its issuer")]
    UnknownKey,
    /// The provider's keys have not been fetched yet.
    #[error("the identity provider's signing keys are not available; try again later")]
    NoKeys,
    /// A required claim is absent or of the wrong type.
    #[error("the token lacks a required claim (exp, iss, aud, or the user claim) or has one of the wrong type")]
    MissingClaim,
    /// Anything else.
    #[error("the token is not valid")]
    Invalid,
    /// A Handover token that no configured token matches (mistyped, revoked, or from
    /// another deployment).
    #[error("the token is not known to this service")]
    Unknown,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> ApiError {
        ApiError::InvalidToken(e)
    }
}

/// Whether a bearer value has the shape of a JWT (three base64url segments; the third may
/// be empty, as in an unsigned `alg: none` token, so that it is refused as a JWT).
pub fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// One usable signing key.
struct Key {
    kid: Option<String>,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

/// The signing keys of a JWKS document that fit `accepted`; encryption keys, symmetric
/// keys and keys for other algorithms are left out.
fn usable_keys(jwks: &[u8], accepted: &[Algorithm]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(jwks).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let fits: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => vec![],
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            // Symmetric keys never verify provider tokens.
            _ => vec![],
        };
        let named = jwk.common.key_algorithm.and_then(|a| match a {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            _ => None,
        });
        let algorithms: Vec<Algorithm> = fits
            .into_iter()
            .filter(|a| accepted.contains(a))
            .filter(|a| jwk.common.key_algorithm.is_none() || named == Some(*a))
            .collect();
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        out.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithms,
            key,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "the JWKS holds no signing key for the accepted algorithms ({})",
            accepted
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(out)
}

/// A configured identity provider with its key cache.
pub(crate) struct Provider {
    cfg: OidcConfig,
    keys: RwLock<Arc<Vec<Key>>>,
    fetch: Option<JwksFetcher>,
    /// When the JWKS URL was last fetched (or tried); held while fetching, so concurrent
    /// requests with an unknown key id cause one fetch.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Provider {
    fn new(cfg: &OidcConfig, fetch: Option<JwksFetcher>) -> Result<Provider, OidcError> {
        let config = |message: &str| OidcError::Config {
            issuer: cfg.issuer.clone(),
            message: message.into(),
        };
        if cfg.issuer.is_empty() || cfg.audience.is_empty() || cfg.organisation.is_empty() {
            return Err(config(
                "issuer, audience and organisation must not be empty",
            ));
        }
        if cfg.algorithms.is_empty() {
            return Err(config("algorithms must name at least one algorithm"));
        }
        if let Some(a) = cfg
            .algorithms
            .iter()
            .find(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        {
            return Err(config(&format!(
                "algorithm {a:?} is refused: HMAC would let anyone holding the public key sign tokens"
            )));
        }
        let keys = match (&cfg.jwks_file, &cfg.jwks_url) {
            (Some(path), None) => {
                let bytes = std::fs::read(path).map_err(|source| OidcError::ReadJwks {
                    issuer: cfg.issuer.clone(),
                    path: path.clone(),
                    source,
                })?;
                usable_keys(&bytes, &cfg.algorithms).map_err(|message| OidcError::Jwks {
                    issuer: cfg.issuer.clone(),
                    message: format!("{}: {message}", path.display()),
                })?
            }
            (None, Some(url)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(config("jwks_url must be an https:// (or http://) URL"));
                }
                if fetch.is_none() {
                    return Err(config("jwks_url needs an HTTP client (none was given)"));
                }
                let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                    .iter()
                    .any(|p| url.starts_with(p));
                if url.starts_with("http://") && !loopback {
                    tracing::warn!(issuer = %cfg.issuer, "jwks_url is plain HTTP: signing keys could be replaced in transit; use https://");
                }
                Vec::new()
            }
            _ => return Err(config("give exactly one of jwks_file and jwks_url")),
        };
        Ok(Provider {
            cfg: cfg.clone(),
            keys: RwLock::new(Arc::new(keys)),
            fetch: cfg.jwks_url.as_ref().and(fetch),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    fn current_keys(&self) -> Arc<Vec<Key>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn has_keys(&self) -> bool {
        !self.current_keys().is_empty()
    }

    /// Fetches the JWKS URL once and replaces the cached keys; on failure keeps them.
    async fn fetch_now(&self) -> Result<usize, String> {
        let (Some(fetch), Some(url)) = (&self.fetch, &self.cfg.jwks_url) else {
            return Ok(self.current_keys().len());
        };
        let bytes = fetch(url.clone()).await?;
        let keys = usable_keys(&bytes, &self.cfg.algorithms)?;
        let n = keys.len();
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(keys),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(keys),
        }
        Ok(n)
    }

    /// Fetches now unless a fetch was tried less than `min_interval` ago; logs the outcome.
    async fn refresh(&self, min_interval: Duration, why: &'static str) {
        if self.fetch.is_none() {
            return;
        }
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < min_interval) {
            return;
        }
        *last = Some(Instant::now());
        let had = self.has_keys();
        match self.fetch_now().await {
            Ok(n) => {
                tracing::debug!(issuer = %self.cfg.issuer, keys = n, why, "fetched the identity provider's signing keys")
            }
            Err(e) if had => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, why, "cannot refresh the identity provider's signing keys; keeping those already held")
            }
            Err(e) => {
                tracing::warn!(issuer = %self.cfg.issuer, error = %e, why, "cannot fetch the identity provider's signing keys; its tokens are refused (401) until they arrive")
            }
        }
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        let keys = self.current_keys();
        if keys.is_empty() {
            return Err(TokenError::NoKeys);
        }
        match kid {
            Some(kid) => match keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.algorithms.contains(&alg) => Ok(k.key.clone()),
                Some(_) => Err(TokenError::Algorithm),
                None => Err(TokenError::UnknownKey),
            },
            // Without a key id, only an unambiguous key will do.
            None => {
                let mut fit = keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fit.next(), fit.next()) {
                    (Some(k), None) => Ok(k.key.clone()),
                    _ => Err(TokenError::UnknownKey),
                }
            }
        }
    }

    /// The key for a token's header, fetching the JWKS again (rate-limited) when the key id
    /// is unknown or no keys are held yet.
    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, TokenError> {
        match self.find(kid, alg) {
            Err(TokenError::UnknownKey | TokenError::NoKeys) if self.fetch.is_some() => {
                self.refresh(
                    Duration::from_secs(self.cfg.jwks_min_refetch_secs),
                    "unknown key id",
                )
                .await;
                self.find(kid, alg)
            }
            found => found,
        }
    }

    async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // `none` and unknown algorithms fail to parse as an `Algorithm`.
            jsonwebtoken::errors::ErrorKind::Json(_) => TokenError::Algorithm,
            _ => TokenError::Malformed,
        })?;
        if !self.cfg.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm.into());
        }
        let key = self.key(header.kid.as_deref(), header.alg).await?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = self.cfg.leeway_secs;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::ImmatureSignature => TokenError::NotYetValid,
                K::InvalidAudience => TokenError::WrongAudience,
                K::InvalidIssuer => TokenError::UnknownIssuer,
                K::InvalidSignature => TokenError::BadSignature,
                K::InvalidAlgorithm | K::MissingAlgorithm => TokenError::Algorithm,
                K::MissingRequiredClaim(_) | K::InvalidClaimFormat(_) => TokenError::MissingClaim,
                K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => TokenError::Malformed,
                _ => TokenError::Invalid,
            }
        })?;
        let claims = data.claims;
        let user = match claim(&claims, &self.cfg.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(TokenError::MissingClaim.into()),
        };
        let role = self.role(&claims)?;
        let expires = claims
            .get("exp")
            .and_then(Value::as_u64)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s + self.cfg.leeway_secs));
        Ok(Caller {
            name: user,
            organisation: self.cfg.organisation.clone(),
            role,
            expires,
        })
    }

    /// The one Handover role the token's role claim holds.
    fn role(&self, claims: &Map<String, Value>) -> Result<Role, ApiError> {
        let name = &self.cfg.role_claim;
        let values: Vec<&str> = match claim(claims, name) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = values
            .into_iter()
            .filter_map(|v| {
                if self.cfg.role_map.is_empty() {
                    Role::ALL.into_iter().find(|r| r.as_str() == v)
                } else {
                    self.cfg.role_map.get(v).copied()
                }
            })
            .collect();
        roles.sort_by_key(|r| r.as_str());
        roles.dedup();
        match roles.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::NoRole(format!(
                "the token carries no Handover role in its {name:?} claim"
            ))),
            several => Err(ApiError::NoRole(format!(
                "the token carries several Handover roles ({}) in its {name:?} claim; its identity provider must give each user exactly one",
                several.iter().map(Role::as_str).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// A claim by name, else by dotted path into nested objects.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let first = claims.get(parts.next()?)?;
    parts.try_fold(first, |v, p| v.get(p))
}

/// Every configured identity provider.
#[derive(Clone, Default)]
pub struct Providers {
    all: Vec<Arc<Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all.iter().map(|p| &p.cfg.issuer))
            .finish()
    }
}

impl Providers {
    /// The providers of `configs`; JWKS files are read now. `fetch` is needed when any
    /// provider has a `jwks_url`.
    pub fn new(configs: &[OidcConfig], fetch: Option<JwksFetcher>) -> Result<Providers, OidcError> {
        let mut all: Vec<Arc<Provider>> = Vec::new();
        for c in configs {
            if all
                .iter()
                .any(|p| p.cfg.issuer == c.issuer && p.cfg.audience == c.audience)
            {
                return Err(OidcError::Config {
                    issuer: c.issuer.clone(),
                    message: format!(
                        "configured twice with audience {:?}: the organisation would be ambiguous",
                        c.audience
                    ),
                });
            }
            all.push(Arc::new(Provider::new(c, fetch.clone())?));
        }
        Ok(Providers { all })
    }

    /// Whether any provider is configured.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Fetches every JWKS URL once (at start-up). A failure is logged, not fatal: that
    /// provider's tokens are refused until a later fetch succeeds.
    pub async fn load(&self) {
        futures::future::join_all(
            self.all
                .iter()
                .map(|p| p.refresh(Duration::ZERO, "start-up")),
        )
        .await;
    }

    /// Keeps every JWKS URL fresh until `stop` resolves: each is fetched every
    /// `jwks_refresh_secs`, or every `jwks_min_refetch_secs` while it has no keys.
    pub async fn run_refresh(self, stop: impl std::future::Future<Output = ()>) {
        let urls: Vec<Arc<Provider>> = self.all.into_iter().filter(|p| p.fetch.is_some()).collect();
        if urls.is_empty() {
            return stop.await;
        }
        tokio::pin!(stop);
        loop {
            // Check every second; each provider decides whether it is due.
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            for p in &urls {
                let interval = if p.has_keys() {
                    p.cfg.jwks_refresh_secs
                } else {
                    p.cfg.jwks_min_refetch_secs
                };
                p.refresh(Duration::from_secs(interval.max(1)), "periodic")
                    .await;
            }
        }
    }

    /// The caller a JWT stands for.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| TokenError::Malformed)?;
        let Some(Value::String(iss)) = claims.get("iss") else {
            return Err(TokenError::MissingClaim.into());
        };
        let candidates: Vec<&Arc<Provider>> =
            self.all.iter().filter(|p| p.cfg.issuer == *iss).collect();
        let provider = match candidates.as_slice() {
            [] => return Err(TokenError::UnknownIssuer.into()),
            [one] => *one,
            several => {
                // Several organisations registered with one issuer: the audience decides.
                let aud: Vec<&str> = match claims.get("aud") {
                    Some(Value::String(s)) => vec![s.as_str()],
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                several
                    .iter()
                    .find(|p| aud.contains(&p.cfg.audience.as_str()))
                    .copied()
                    .ok_or(TokenError::WrongAudience)?
            }
        };
        let caller = provider.verify(token).await;
        if let Err(e) = &caller {
            // The reason only: never the token or its claims.
            tracing::debug!(issuer = %provider.cfg.issuer, reason = %e, "bearer token refused");
        }
        caller
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("eyJh.eyJz."), "alg none: refused as a JWT");
        assert!(!looks_like_jwt("test-token-admin-RX1"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a b.c.d"));
        assert!(!looks_like_jwt(
            "0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
    }

    fn cfg(jwks_file: Option<PathBuf>, jwks_url: Option<&str>) -> OidcConfig {
        let mut c: OidcConfig = serde_json::from_value(serde_json::json!({
            "organisation": "RX1", "issuer": "https://idp.example", "audience": "handover"
        }))
        .unwrap();
        c.jwks_file = jwks_file;
        c.jwks_url = jwks_url.map(str::to_string);
        c
    }

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/oidc")
    }

    #[test]
    fn configuration_is_checked() {
        let err = |c: OidcConfig| Providers::new(&[c], None).unwrap_err().to_string();
        assert!(err(cfg(None, None)).contains("exactly one of jwks_file and jwks_url"));
        let both = cfg(
            Some(fixtures().join("jwks.json")),
            Some("https://idp.example/k"),
        );
        assert!(err(both).contains("exactly one"));
        let mut hs = cfg(Some(fixtures().join("jwks.json")), None);
        hs.algorithms = vec![Algorithm::RS256, Algorithm::HS256];
        assert!(err(hs).contains("HS256 is refused"));
        assert!(err(cfg(Some(fixtures().join("missing.json")), None))
            .contains("cannot read the JWKS file"));
        assert!(err(cfg(Some(fixtures().join("README.md")), None)).contains("not a JWKS"));
        assert!(err(cfg(None, Some("https://idp.example/k"))).contains("HTTP client"));
        let ok = Providers::new(&[cfg(Some(fixtures().join("jwks.json")), None)], None).unwrap();
        assert_eq!(ok.all[0].current_keys().len(), 2);
    }

    #[test]
    fn keys_that_do_not_fit_are_left_out() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "shared", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        ]});
        let e = usable_keys(jwks.to_string().as_bytes(), &default_algorithms())
            .err()
            .unwrap();
        assert!(e.contains("no signing key"), "{e}");
        let ec = std::fs::read(fixtures().join("jwks.json")).unwrap();
        // only RS256 accepted: the P-256 key is left out
        assert_eq!(usable_keys(&ec, &[Algorithm::RS256]).unwrap().len(), 1);
    }

    /// Answers a fetcher gives, in order (the last one repeats).
    type Answers = Arc<std::sync::Mutex<Vec<Result<Vec<u8>, String>>>>;

    fn counting_fetcher(
        bodies: Answers,
        calls: Arc<std::sync::atomic::AtomicUsize>,
    ) -> JwksFetcher {
        Arc::new(move |_url| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = {
                let mut b = bodies.lock().unwrap();
                if b.len() > 1 {
                    b.remove(0)
                } else {
                    b[0].clone()
                }
            };
            Box::pin(async move { next })
        })
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_keys_and_unknown_kids_refetch_at_most_once_per_interval() {
        let jwks = std::fs::read(fixtures().join("jwks.json")).unwrap();
        let bodies = Arc::new(std::sync::Mutex::new(vec![
            Ok(jwks),
            Err("connection refused".to_string()),
        ]));
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut c = cfg(None, Some("https://idp.example/jwks"));
        c.jwks_min_refetch_secs = 3600;
        let p = Providers::new(&[c], Some(counting_fetcher(bodies, calls.clone()))).unwrap();
        let provider = p.all[0].clone();
        assert!(matches!(
            provider.find(Some("test-rsa-1"), Algorithm::RS256),
            Err(TokenError::NoKeys)
        ));
        p.load().await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(provider.find(Some("test-rsa-1"), Algorithm::RS256).is_ok());
        // an unknown kid: one refetch (fails) is allowed only after the interval
        assert!(matches!(
            provider.key(Some("nope"), Algorithm::RS256).await,
            Err(TokenError::UnknownKey)
        ));
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "rate-limited"
        );
        *provider.last_fetch.lock().await = None;
        assert!(matches!(
            provider.key(Some("nope"), Algorithm::RS256).await,
            Err(TokenError::UnknownKey)
        ));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // the failed fetch kept what was held
        assert!(provider.find(Some("test-rsa-1"), Algorithm::RS256).is_ok());
        assert!(matches!(
            provider.find(Some("test-rsa-1"), Algorithm::ES256),
            Err(TokenError::Algorithm)
        ));
    }
}
