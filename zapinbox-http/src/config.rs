//! The server's settings, read from the environment under ZapStream's own
//! names where it has one, so a ZapStream deployment's settings carry over.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use zapinbox_core::{
    DailyLimits, Inbox, IntoBackend, Limits, QueueConfig, Quotas, RateLimit, TenantId,
};

/// The key ZapStream serves with when `API_KEYS` is not set.
pub const DEV_KEY: &str = "dev_key_123";
/// The tenant of [`DEV_KEY`].
pub const DEV_TENANT: &str = "tenant_dev";

/// Everything the server is told at start-up. [`Config::from_env`] reads
/// it; the `with_*` methods set it in code (tests, embedding).
///
/// `Debug` prints no key and no secret.
#[derive(Clone)]
pub struct Config {
    /// API key → tenant (`API_KEYS=key=tenant,...`).
    pub api_keys: HashMap<String, TenantId>,
    /// The HS256 secret bearer JWTs are signed with (`JWT_SECRET`); none:
    /// JWTs are refused.
    pub jwt_secret: Option<String>,
    /// Calls a tenant may make a minute (`RATE_LIMIT_PER_MINUTE`, default
    /// 60 as ZapStream; 0 turns the limit off).
    pub rate_limit_per_minute: u32,
    /// Largest payload, in bytes of its JSON text as sent
    /// (`MAX_PAYLOAD_BYTES`, default 524 288).
    pub max_payload_bytes: usize,
    /// Browser origins allowed to call the API (`CORS_ALLOWED_ORIGINS`,
    /// comma-separated, exact: `*` is refused, since credentials are
    /// allowed).
    pub cors_origins: Vec<String>,
    /// The bearer token `/metrics` asks for (`METRICS_TOKEN`); none:
    /// `/metrics` is open to whoever reaches the server (it names tenants).
    pub metrics_token: Option<String>,
    /// Daily limits of each tenant (`QUOTA_MESSAGES_IN_PER_DAY`,
    /// `QUOTA_BYTES_IN_PER_DAY`, `QUOTA_MESSAGES_OUT_PER_DAY`,
    /// `QUOTA_BYTES_OUT_PER_DAY`; default none).
    pub quota: DailyLimits,
    /// Live streams a tenant may hold at once (`MAX_STREAMS_PER_TENANT`,
    /// default 8).
    pub max_streams_per_tenant: usize,
    /// How often a quiet stream sends `: heartbeat` (`HEARTBEAT_SECONDS`,
    /// default 10).
    pub heartbeat: Duration,
    /// Where to listen (`BIND_ADDRESS`, default 127.0.0.1, and `PORT`,
    /// default 8000).
    pub listen: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        let dev = TenantId::new(DEV_TENANT).ok();
        Config {
            api_keys: dev.map(|t| (DEV_KEY.to_owned(), t)).into_iter().collect(),
            jwt_secret: None,
            rate_limit_per_minute: 60,
            max_payload_bytes: 524_288,
            cors_origins: vec![
                "http://localhost:3000".into(),
                "http://127.0.0.1:3000".into(),
            ],
            metrics_token: None,
            quota: DailyLimits::none(),
            max_streams_per_tenant: 8,
            heartbeat: Duration::from_secs(10),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000),
        }
    }
}

/// A setting that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub name: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl Config {
    /// The settings in the process environment; unset variables keep
    /// their defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings `var` gives, by variable name (for tests: no process
    /// environment involved).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Config::default();
        if let Some(keys) = var("API_KEYS") {
            config.api_keys = parse_keys(&keys)?;
        }
        config.jwt_secret = var("JWT_SECRET").filter(|s| !s.is_empty());
        if let Some(n) = number(&var, "RATE_LIMIT_PER_MINUTE")? {
            config.rate_limit_per_minute = n;
        }
        if let Some(n) = number(&var, "MAX_PAYLOAD_BYTES")? {
            config.max_payload_bytes = n;
        }
        if let Some(origins) = var("CORS_ALLOWED_ORIGINS") {
            config.cors_origins = parse_origins(&origins)?;
        }
        config.metrics_token = var("METRICS_TOKEN").filter(|t| !t.is_empty());
        type Set = fn(DailyLimits, u64) -> DailyLimits;
        let quotas: [(&'static str, Set); 4] = [
            ("QUOTA_MESSAGES_IN_PER_DAY", DailyLimits::messages_in),
            ("QUOTA_BYTES_IN_PER_DAY", DailyLimits::bytes_in),
            ("QUOTA_MESSAGES_OUT_PER_DAY", DailyLimits::messages_out),
            ("QUOTA_BYTES_OUT_PER_DAY", DailyLimits::bytes_out),
        ];
        for (name, set) in quotas {
            if let Some(n) = number(&var, name)? {
                config.quota = set(config.quota, n);
            }
        }
        if let Some(n) = number(&var, "MAX_STREAMS_PER_TENANT")? {
            config.max_streams_per_tenant = n;
        }
        if let Some(secs) = number::<u64>(&var, "HEARTBEAT_SECONDS")? {
            config.heartbeat = Duration::from_secs(secs.clamp(1, 3600));
        }
        if let Some(ip) = var("BIND_ADDRESS") {
            let ip = ip.parse().map_err(|e| ConfigError {
                name: "BIND_ADDRESS",
                reason: format!("{ip:?} is not an IP address: {e}"),
            })?;
            config.listen.set_ip(ip);
        }
        if let Some(port) = number(&var, "PORT")? {
            config.listen.set_port(port);
        }
        Ok(config)
    }

    /// The backend settings these imply: the daily quotas.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig::default().with_quotas(Quotas::off().per_tenant(self.quota))
    }

    /// An inbox on `backend` with these limits, this rate limit and
    /// metering on (for `GET /usage`).
    pub fn inbox(&self, backend: impl IntoBackend) -> Inbox {
        let limits = Limits::default().with_max_payload_bytes(self.max_payload_bytes);
        let mut builder = Inbox::builder(backend)
            .limits(limits)
            .metering(true)
            .max_subscriptions(self.max_streams_per_tenant);
        if self.rate_limit_per_minute > 0 {
            builder = builder.rate_limit(RateLimit::per_minute(self.rate_limit_per_minute));
        }
        builder.build()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tenants: Vec<&str> = self.api_keys.values().map(TenantId::as_str).collect();
        tenants.sort_unstable();
        tenants.dedup();
        f.debug_struct("Config")
            .field(
                "api_keys",
                &format_args!("{} keys of {tenants:?}", self.api_keys.len()),
            )
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("cors_origins", &self.cors_origins)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("quota", &self.quota)
            .field("max_streams_per_tenant", &self.max_streams_per_tenant)
            .field("heartbeat", &self.heartbeat)
            .field("listen", &self.listen)
            .finish()
    }
}

/// `key=tenant` pairs, comma-separated, split at the first `=`. Unlike
/// ZapStream, no key is added that was not listed, and a pair that cannot
/// be used is an error rather than skipped.
fn parse_keys(text: &str) -> Result<HashMap<String, TenantId>, ConfigError> {
    let fail = |reason: String| ConfigError {
        name: "API_KEYS",
        reason,
    };
    let mut keys = HashMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, tenant) = pair
            .split_once('=')
            .ok_or_else(|| fail(format!("{:?} is not key=tenant", redact(pair))))?;
        let tenant = TenantId::new(tenant.trim())
            .map_err(|e| fail(format!("the tenant of key {:?}: {e}", redact(key))))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(fail(format!("an empty key for tenant {tenant}")));
        }
        keys.insert(key.to_owned(), tenant);
    }
    Ok(keys)
}

/// Exact `scheme://host[:port]` origins, comma-separated.
fn parse_origins(text: &str) -> Result<Vec<String>, ConfigError> {
    let origins = text.split(',').map(str::trim).filter(|o| !o.is_empty());
    origins
        .map(|origin| {
            let exact = (origin.starts_with("http://") || origin.starts_with("https://"))
                && axum::http::HeaderValue::from_str(origin).is_ok()
                && !origin.contains('*');
            exact.then(|| origin.to_owned()).ok_or_else(|| ConfigError {
                name: "CORS_ALLOWED_ORIGINS",
                reason: format!("{origin:?} is not an exact http(s) origin (no wildcards)"),
            })
        })
        .collect()
}

/// The first characters of a key, enough to find it in a config file.
fn redact(key: &str) -> String {
    let shown: String = key.chars().take(4).collect();
    format!("{shown}…")
}

fn number<T: std::str::FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    var(name)
        .map(|text| {
            text.trim().parse().map_err(|e| ConfigError {
                name,
                reason: format!("{text:?} is not a number: {e}"),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_are_zapstreams() {
        let c = config(&[]).expect("defaults");
        assert_eq!(c.api_keys[DEV_KEY].as_str(), DEV_TENANT);
        assert_eq!(c.rate_limit_per_minute, 60);
        assert_eq!(c.max_payload_bytes, 524_288);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn keys_are_split_at_the_first_equals_sign_and_nothing_is_added() {
        let c = config(&[("API_KEYS", "a=one, b=c=two ,,k2=one")]);
        let c = c.expect_err("c=two is not a tenant");
        assert_eq!(c.name, "API_KEYS");
        let c = config(&[("API_KEYS", "a=one,k2=one")]).expect("keys");
        assert_eq!(c.api_keys.len(), 2);
        assert!(!c.api_keys.contains_key(DEV_KEY));
        assert!(config(&[("API_KEYS", "nokey")]).is_err());
        assert!(config(&[("API_KEYS", "=t")]).is_err());
    }

    #[test]
    fn numbers_and_addresses_are_checked() {
        let bad = config(&[("PORT", "eighty")]).expect_err("not a port");
        assert_eq!(bad.name, "PORT");
        let c = config(&[("PORT", "9001"), ("BIND_ADDRESS", "0.0.0.0")]).expect("listen");
        assert_eq!(c.listen.to_string(), "0.0.0.0:9001");
        for bad in ["*", "example.com", "https://*.example.com"] {
            let refused = config(&[("CORS_ALLOWED_ORIGINS", bad)]).expect_err(bad);
            assert_eq!(refused.name, "CORS_ALLOWED_ORIGINS");
        }
        let c = config(&[("HEARTBEAT_SECONDS", "99999999999")]).expect("clamped");
        assert_eq!(c.heartbeat, Duration::from_secs(3600));
        let c = config(&[("QUOTA_MESSAGES_IN_PER_DAY", "10")]).expect("quota");
        assert_eq!(c.quota.messages_in, Some(10));
    }

    #[test]
    fn debug_shows_no_key_or_secret() {
        let c = config(&[("API_KEYS", "sekrit=one"), ("JWT_SECRET", "hush")]).expect("c");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("sekrit") && !shown.contains("hush"),
            "{shown}"
        );
    }
}
