//! `handover.toml`: what a deployment runs and where. Unknown keys are rejected by name.
//!
//! ```toml
//! [nats]
//! url = "nats://127.0.0.1:4222"   # HANDOVER_NATS_URL and --nats-url override this
//! stream = "HANDOVER"
//! replicas = 1                     # 3 on a clustered JetStream
//! duplicate_window_secs = 3600
//! max_pending = 1024               # publishes waiting for NATS or in flight; more get 503/AR
//! publish_wait_ms = 5000           # how long a publish waits for NATS to come back
//!
//! [pseudonym]
//! key_file = "/etc/handover/pseudonym.key"   # or HANDOVER_PSEUDONYM_KEY (hex); secret
//!
//! [store]
//! path = "/var/lib/handover/read-models"
//!
//! [api]
//! listen = "127.0.0.1:8080"
//!
//! [projections]
//! ready_max_lag = 1000
//!
//! [hl7]                            # the MLLP listener runs when this section is present
//! listen = "127.0.0.1:2575"
//!
//! [[tokens]]
//! name = "rx1-discharge-hub"
//! organisation = "RX1"
//! role = "discharge-team"
//! token_sha256 = "…64 hex digits…"   # sha256 of the token; never the token itself
//!
//! [[oidc]]                           # an organisation's OpenID Connect identity provider
//! organisation = "E08000035"         # every user of this provider belongs to it
//! issuer = "https://login.example.org/leeds/v2.0"   # the tokens' `iss`, exactly
//! audience = "api://handover"        # the tokens' `aud` must include it
//! jwks_url = "https://login.example.org/leeds/discovery/keys"   # or jwks_file = "…"
//! role_claim = "roles"               # default; string, space-separated or array
//! user_claim = "sub"                 # default; named in the access audit
//! algorithms = ["RS256", "ES256"]    # default; HS* refused
//! leeway_secs = 60                   # default
//! jwks_refresh_secs = 600            # default: fetch the JWKS URL again this often
//! jwks_min_refetch_secs = 30         # default: at most this often for an unknown `kid`
//! [oidc.role_map]                    # optional: claim values -> Handover roles
//! "Handover.Broker" = "broker"
//! ```
//!
//! A token's role claim must hold exactly one Handover role (after `role_map`): none, or
//! several different ones, is refused with `403` — the identity provider must assign one.
//! A JWKS URL that cannot be fetched at start-up is logged as a warning, not fatal: that
//! provider's tokens get `401` until its keys arrive (retried every
//! `jwks_min_refetch_secs`). A `jwks_file` that cannot be read or holds no usable key is a
//! start-up error.
//!
//! `[nats]` also takes the service's NATS credentials when the server requires them
//! (deploy/nats-accounts.conf): `nkey_seed_file` (an nkey user seed, `SU…`), or `user`
//! with `password_file` (or `HANDOVER_NATS_PASSWORD`). Secrets are never in this file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use handover_api::oidc::OidcConfig;
use handover_api::TokenConfig;
use handover_events::PseudonymKey;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The NATS JetStream event log.
    #[serde(default)]
    pub nats: NatsConfig,
    /// The pseudonym key for NATS subjects and read-model keys.
    #[serde(default)]
    pub pseudonym: PseudonymConfig,
    /// The read-model store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The HTTP API and web UI.
    #[serde(default)]
    pub api: ApiConfig,
    /// The projections.
    #[serde(default)]
    pub projections: ProjectionsConfig,
    /// API bearer tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// OpenID Connect identity providers (`[[oidc]]`), one per organisation.
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
    /// The adapters' sections (`[hl7]`, `[filedrop]`, … — one per entry of
    /// `handover_adapters::ADAPTERS`), each checked by its adapter; an adapter runs when its
    /// section is present (the HL7 listener always does in `dev`).
    #[serde(skip)]
    pub adapters: std::collections::BTreeMap<String, toml::Value>,
}

/// `[nats]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    #[serde(default)]
    pub url: Option<String>,
    /// Stream name.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Replicas (1 or 3).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Duplicate window in seconds (at least 120).
    #[serde(default = "default_dup_window")]
    pub duplicate_window_secs: u64,
    /// Most publish calls (one per HTTP request, HL7 message or file-drop chunk) waiting for
    /// NATS or for their acknowledgements at once; one more is refused at once (HTTP `503`
    /// with `Retry-After`, HL7 `AR`, the file is retried later). Bounds the memory held
    /// while NATS is away.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
    /// How long (milliseconds) a publish waits for NATS to come back while disconnected
    /// before its sender is told to retry later. Nothing is sent to NATS meanwhile.
    #[serde(default = "default_publish_wait_ms")]
    pub publish_wait_ms: u64,
    /// File holding the service's NATS nkey user seed (`SU…`), when the server
    /// authenticates users by nkey.
    #[serde(default)]
    pub nkey_seed_file: Option<PathBuf>,
    /// NATS user name, when the server authenticates by user and password.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding that user's password (or set `HANDOVER_NATS_PASSWORD`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
}

fn default_stream() -> String {
    "HANDOVER".into()
}
fn default_replicas() -> usize {
    1
}
fn default_dup_window() -> u64 {
    3600
}
fn default_max_pending() -> usize {
    handover_nats::LogConfig::default().max_pending
}
fn default_publish_wait_ms() -> u64 {
    handover_nats::LogConfig::default().publish_wait.as_millis() as u64
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            stream: default_stream(),
            replicas: default_replicas(),
            duplicate_window_secs: default_dup_window(),
            max_pending: default_max_pending(),
            publish_wait_ms: default_publish_wait_ms(),
            nkey_seed_file: None,
            user: None,
            password_file: None,
        }
    }
}

/// `[pseudonym]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymConfig {
    /// File holding the key as hex (at least 32 hex digits).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the sled database.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// sled's page cache in MiB (default 64): raise it when the read models outgrow it and
    /// memory allows (docs/performance.md).
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// sled's zstd compression of the store (default false): measured before the journey
    /// records were compressed, at 1M events 1.3× the logical size on disk instead of 6×,
    /// but catch-up about a third slower and far more memory (docs/performance.md). It applies to new stores: an existing store keeps the setting
    /// it was created with (a warning at start-up says so).
    #[serde(default = "default_compression")]
    pub compression: bool,
}

fn default_compression() -> bool {
    false
}

fn default_cache_mb() -> u64 {
    handover_store::DEFAULT_CACHE_BYTES / (1024 * 1024)
}

fn default_store_path() -> PathBuf {
    PathBuf::from("./.handover/read-models")
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: default_store_path(),
            cache_mb: default_cache_mb(),
            compression: default_compression(),
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Run the API (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: default_listen(),
        }
    }
}

/// `[projections]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionsConfig {
    /// Run the projections (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Readiness fails while a projection is more than this many events behind.
    #[serde(default = "default_lag")]
    pub ready_max_lag: u64,
}

fn default_lag() -> u64 {
    1000
}

impl Default for ProjectionsConfig {
    fn default() -> Self {
        ProjectionsConfig {
            enabled: true,
            ready_max_lag: default_lag(),
        }
    }
}

/// The default NATS URL (contract §5).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

impl Config {
    /// Reads a config file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid configuration in {}", path.display()))
    }

    /// Parses a configuration: adapters' sections are taken out by the names in the adapter
    /// registry and checked by their adapters; everything else must be a known key.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut table: toml::Table = toml::from_str(text)?;
        let mut adapters = std::collections::BTreeMap::new();
        for a in handover_adapters::ADAPTERS {
            if let Some(section) = table.remove(a.config_section) {
                (a.check)(&section).map_err(|e| anyhow::anyhow!(e))?;
                adapters.insert(a.config_section.to_string(), section);
            }
        }
        let mut cfg: Config = toml::Value::Table(table).try_into()?;
        cfg.adapters = adapters;
        Ok(cfg)
    }

    /// The file named by `--config`, else `HANDOVER_CONFIG`, else defaults; then the NATS URL
    /// from `--nats-url`, else `HANDOVER_NATS_URL`, else the file.
    pub fn resolve(
        flag_config: Option<&Path>,
        flag_nats_url: Option<&str>,
    ) -> anyhow::Result<Config> {
        let env_config = std::env::var_os("HANDOVER_CONFIG").map(PathBuf::from);
        let mut cfg = match flag_config.map(Path::to_path_buf).or(env_config) {
            Some(p) => Config::load(&p)?,
            None => Config::default(),
        };
        if let Some(url) = flag_nats_url.map(str::to_string).or_else(|| {
            std::env::var("HANDOVER_NATS_URL")
                .ok()
                .filter(|s| !s.is_empty())
        }) {
            cfg.nats.url = Some(url);
        }
        if cfg.nats.duplicate_window_secs < 120 {
            anyhow::bail!(
                "nats.duplicate_window_secs must be at least 120 (the contract's two minutes)"
            );
        }
        if !matches!(cfg.nats.replicas, 1 | 3) {
            anyhow::bail!("nats.replicas must be 1 or 3");
        }
        if cfg.nats.max_pending == 0 {
            anyhow::bail!("nats.max_pending must be at least 1");
        }
        Ok(cfg)
    }

    /// How the event log is set up, from `[nats]`.
    pub fn log_config(&self) -> handover_nats::LogConfig {
        handover_nats::LogConfig {
            stream: self.nats.stream.clone(),
            replicas: self.nats.replicas,
            duplicate_window: std::time::Duration::from_secs(self.nats.duplicate_window_secs),
            max_pending: self.nats.max_pending,
            publish_wait: std::time::Duration::from_millis(self.nats.publish_wait_ms),
            ..handover_nats::LogConfig::default()
        }
    }

    /// The NATS credentials: an nkey seed from `nats.nkey_seed_file`, or `nats.user` with
    /// the password from `HANDOVER_NATS_PASSWORD`, else `nats.password_file`; none when
    /// neither is configured.
    pub fn nats_auth(&self) -> anyhow::Result<handover_nats::NatsAuth> {
        use handover_nats::NatsAuth;
        match (&self.nats.nkey_seed_file, &self.nats.user) {
            (Some(_), Some(_)) => {
                anyhow::bail!(
                    "nats: give either nkey_seed_file or user (with a password), not both"
                )
            }
            (Some(p), None) => {
                let seed = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the NATS nkey seed file {}", p.display())
                })?;
                let seed = seed.trim().to_string();
                if !seed.starts_with("SU") {
                    anyhow::bail!("{} does not hold an nkey user seed (SU…)", p.display());
                }
                Ok(NatsAuth::NKey(seed))
            }
            (None, Some(user)) => {
                let password = match std::env::var("HANDOVER_NATS_PASSWORD")
                    .ok()
                    .filter(|s| !s.is_empty())
                {
                    Some(p) => p,
                    None => match &self.nats.password_file {
                        Some(p) => std::fs::read_to_string(p)
                            .with_context(|| {
                                format!("cannot read the NATS password file {}", p.display())
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                        None => anyhow::bail!(
                            "nats.user is set: set HANDOVER_NATS_PASSWORD or nats.password_file"
                        ),
                    },
                };
                Ok(NatsAuth::UserPassword {
                    user: user.clone(),
                    password,
                })
            }
            (None, None) => {
                if self.nats.password_file.is_some() {
                    anyhow::bail!("nats.password_file needs nats.user");
                }
                Ok(NatsAuth::None)
            }
        }
    }

    /// The pseudonym key: `HANDOVER_PSEUDONYM_KEY` (hex), else `pseudonym.key_file`.
    pub fn pseudonym_key(&self) -> anyhow::Result<PseudonymKey> {
        let hex_key = match std::env::var("HANDOVER_PSEUDONYM_KEY").ok().filter(|s| !s.is_empty()) {
            Some(k) => k,
            None => match &self.pseudonym.key_file {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the pseudonym key file {}", p.display()))?,
                None => anyhow::bail!(
                    "no pseudonym key: set HANDOVER_PSEUDONYM_KEY (hex) or pseudonym.key_file in the configuration"
                ),
            },
        };
        let bytes = hex::decode(hex_key.trim()).context("the pseudonym key must be hex")?;
        PseudonymKey::new(bytes).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = format!("{:#}", Config::parse("[nats]\nurll = \"x\"\n").unwrap_err());
        assert!(err.contains("unknown field `urll`"), "{err}");
        let cfg = Config::parse("[nats]\nurl = \"nats://h:4222\"\nreplicas = 3\n").unwrap();
        let err = format!(
            "{:#}",
            Config::parse("[hl7]\nlisten = \"127.0.0.1:1\"\nport = 3\n").unwrap_err()
        );
        assert!(err.contains("[hl7]") && err.contains("port"), "{err}");
        assert_eq!(cfg.nats.url.as_deref(), Some("nats://h:4222"));
        assert_eq!(cfg.nats.replicas, 3);
        assert_eq!(cfg.api.listen.port(), 8080);
        let err = format!(
            "{:#}",
            Config::parse("[nats]\nmax_pending = -1\n").unwrap_err()
        );
        assert!(err.contains("max_pending"), "{err}");
    }

    #[test]
    fn the_shipped_example_configuration_parses() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/handover.toml");
        let cfg = Config::load(&path).unwrap();
        assert_eq!(cfg.tokens.len(), 2);
        let log = cfg.log_config();
        assert_eq!(
            (log.max_pending, log.publish_wait),
            (1024, std::time::Duration::from_secs(5))
        );
        assert_eq!(cfg.store.cache_mb, 64);
        assert!(!cfg.store.compression && !Config::default().store.compression);
        assert_eq!(Config::default().store.cache_mb, 64);
        assert_eq!(cfg.oidc.len(), 1);
        assert_eq!(cfg.oidc[0].organisation, "E08000035");
        assert_eq!(cfg.adapters["hl7"]["listen"].as_str(), Some("0.0.0.0:2575"));
        assert_eq!(
            cfg.adapters["filedrop"]["sources"].as_array().map(Vec::len),
            Some(1)
        );
        handover_api::Auth::new(&cfg.tokens).unwrap();
        // the identity provider's entry is complete (its JWKS URL is not fetched here)
        crate::runtime::oidc_providers(&cfg.oidc).unwrap();
    }

    #[test]
    fn an_oidc_section_parses_with_defaults_and_rejects_unknown_keys() {
        use handover_api::oidc::Algorithm;
        let cfg = Config::parse(
            r#"
[[oidc]]
organisation = "RX1"
issuer = "https://idp.rx1.example"
audience = "handover"
jwks_file = "/etc/handover/rx1-jwks.json"

[[oidc]]
organisation = "E08000035"
issuer = "https://login.example.org/leeds/v2.0"
audience = "api://handover"
jwks_url = "https://login.example.org/leeds/discovery/keys"
role_claim = "realm_access.roles"
user_claim = "preferred_username"
algorithms = ["ES256"]
leeway_secs = 30
jwks_refresh_secs = 3600
jwks_min_refetch_secs = 10
[oidc.role_map]
"Handover.Broker" = "broker"
"#,
        )
        .unwrap();
        let (a, b) = (&cfg.oidc[0], &cfg.oidc[1]);
        assert_eq!(a.role_claim, "roles");
        assert_eq!(a.user_claim, "sub");
        assert_eq!(a.algorithms, [Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(
            (a.leeway_secs, a.jwks_refresh_secs, a.jwks_min_refetch_secs),
            (60, 600, 30)
        );
        assert!(a.role_map.is_empty());
        assert_eq!(
            b.jwks_url.as_deref(),
            Some("https://login.example.org/leeds/discovery/keys")
        );
        assert_eq!(b.role_claim, "realm_access.roles");
        assert_eq!(b.user_claim, "preferred_username");
        assert_eq!(b.algorithms, [Algorithm::ES256]);
        assert_eq!(b.role_map["Handover.Broker"], handover_api::Role::Broker);
        assert_eq!(
            (b.leeway_secs, b.jwks_refresh_secs, b.jwks_min_refetch_secs),
            (30, 3600, 10)
        );

        let err = |text: &str| format!("{:#}", Config::parse(text).unwrap_err());
        let base = "[[oidc]]\norganisation = \"RX1\"\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"f\"\n";
        assert!(err(&format!("{base}jwks_uri = \"x\"\n")).contains("unknown field `jwks_uri`"));
        assert!(err(&format!("{base}algorithms = [\"none\"]\n")).contains("none"));
        assert!(err(&format!("{base}[oidc.role_map]\nx = \"nurse\"\n")).contains("nurse"));
        assert!(err("[[oidc]]\norganisation = \"RX1\"\n").contains("missing field"));
    }

    #[test]
    fn nats_credentials_come_from_files_never_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("handover.nk");
        std::fs::write(&seed, "SUAEXAMPLE\n").unwrap();
        let cfg = Config::parse(&format!("[nats]\nnkey_seed_file = {:?}\n", seed)).unwrap();
        assert!(
            matches!(cfg.nats_auth().unwrap(), handover_nats::NatsAuth::NKey(s) if s == "SUAEXAMPLE")
        );
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let cfg = Config::parse(&format!(
            "[nats]\nuser = \"handover\"\npassword_file = {:?}\n",
            pw
        ))
        .unwrap();
        assert!(
            matches!(cfg.nats_auth().unwrap(), handover_nats::NatsAuth::UserPassword { user, password } if user == "handover" && password == "s3cret")
        );
        assert!(matches!(
            Config::default().nats_auth().unwrap(),
            handover_nats::NatsAuth::None
        ));
        std::fs::write(&seed, "not a seed").unwrap();
        let cfg = Config::parse(&format!("[nats]\nnkey_seed_file = {:?}\n", seed)).unwrap();
        assert!(cfg.nats_auth().is_err());
    }
}
