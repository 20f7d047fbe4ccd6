//! Bearer tokens mapped to an organisation and a role.
//!
//! Two kinds: tokens configured as SHA-256 digests (never in clear, compared in constant
//! time), and JSON Web Tokens from an organisation's OpenID Connect identity provider
//! ([`crate::oidc`]). A bearer value shaped like a JWT (three base64url segments) is
//! checked as one; anything else against the digests. Neither is ever logged.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::ApiError;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Hospital discharge team.
    DischargeTeam,
    /// Council brokerage.
    Broker,
    /// Council social worker.
    SocialWorker,
    /// A producer system or integration engineer: publishes events, sees pipeline health.
    Integration,
    /// Information governance: reads the access audit.
    Auditor,
    /// Operator.
    Admin,
}

impl Role {
    /// The role's name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::DischargeTeam => "discharge-team",
            Role::Broker => "broker",
            Role::SocialWorker => "social-worker",
            Role::Integration => "integration",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::DischargeTeam,
        Role::Broker,
        Role::SocialWorker,
        Role::Integration,
        Role::Auditor,
        Role::Admin,
    ];

    /// Whether the role may read people's records: the direct-care roles only. Integration
    /// engineers, auditors and administrators run the system; they do not read records.
    pub fn reads_people(&self) -> bool {
        matches!(
            self,
            Role::DischargeTeam | Role::Broker | Role::SocialWorker
        )
    }

    /// Whether the role may publish events.
    pub fn publishes(&self) -> bool {
        matches!(self, Role::Integration | Role::Admin)
    }
}

/// One configured token.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for the holder, recorded in the audit (e.g. `rx1-discharge-hub`).
    pub name: String,
    /// The holder's organisation (ODS or GSS code).
    pub organisation: String,
    /// The holder's role.
    pub role: Role,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Holder name: the configured token's name, or the user claim of an OpenID Connect
    /// token (recorded in the access audit).
    pub name: String,
    /// Organisation.
    pub organisation: String,
    /// Role.
    pub role: Role,
    /// When the credential stops being valid (OpenID Connect tokens: `exp` plus leeway); a
    /// web session signed in with it ends then too.
    pub expires: Option<std::time::SystemTime>,
}

/// The token table and the OpenID Connect providers.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<(Vec<u8>, Caller)>,
    oidc: crate::oidc::Providers,
}

/// Hex SHA-256 of a token, as configured.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Auth {
    /// A table from configuration; entries with a malformed digest are refused.
    pub fn new(tokens: &[TokenConfig]) -> Result<Auth, String> {
        let mut out = Vec::new();
        for t in tokens {
            let digest = hex::decode(&t.token_sha256)
                .ok()
                .filter(|d| d.len() == 32)
                .ok_or_else(|| format!("token {:?}: token_sha256 must be 64 hex digits", t.name))?;
            out.push((
                digest,
                Caller {
                    name: t.name.clone(),
                    organisation: t.organisation.clone(),
                    role: t.role,
                    expires: None,
                },
            ));
        }
        Ok(Auth {
            tokens: out,
            oidc: Default::default(),
        })
    }

    /// The table with OpenID Connect providers added.
    pub fn with_oidc(mut self, providers: crate::oidc::Providers) -> Auth {
        self.oidc = providers;
        self
    }

    /// The OpenID Connect providers (to load and refresh their keys).
    pub fn oidc(&self) -> &crate::oidc::Providers {
        &self.oidc
    }

    /// The caller presenting `headers`' bearer token: `401` for a missing, unknown or
    /// invalid token, `403` for a valid OpenID Connect token without one Handover role.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        // The scheme is case-insensitive (RFC 9110 section 11.1): `Bearer`, `bearer`, `BEARER`.
        let token = value
            .trim_start()
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or(ApiError::Unauthenticated)?;
        if crate::oidc::looks_like_jwt(token) {
            if self.oidc.is_empty() {
                return Err(crate::oidc::TokenError::UnknownIssuer.into());
            }
            return self.oidc.authenticate(token).await;
        }
        let digest = Sha256::digest(token.as_bytes());
        let mut found = None;
        // Compare against every entry so timing does not reveal which one matched.
        for (d, caller) in &self.tokens {
            if bool::from(d.as_slice().ct_eq(digest.as_slice())) {
                found = Some(caller);
            }
        }
        // A token was presented and is wrong: RFC 6750's `invalid_token` (a missing one
        // gets the bare challenge).
        found
            .cloned()
            .ok_or(crate::oidc::TokenError::Unknown.into())
    }
}

/// Lawful reasons for reading a person's record.
pub const ACCESS_REASONS: [&str; 4] = [
    "direct-care",
    "safeguarding",
    "vital-interests",
    "explicit-consent",
];
