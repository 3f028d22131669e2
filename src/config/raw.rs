//! The YAML schema exactly as operators write it (serde, unknown fields are
//! errors). `validate` turns it into the typed [`super::Config`].

use crate::config::Isolation;
use crate::identity::IdentityField;
use crate::policy::{UnlistedMethods, UnlistedTools};
use crate::ratelimit::Rate;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Top level of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub public_url: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub upstreams: Vec<RawUpstream>,
    pub auth: Option<RawAuth>,
    pub authorization_server: Option<RawAuthServer>,
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub logging: RawLogging,
    pub identity_key_file: Option<String>,
    pub tls: Option<RawListenTls>,
}

/// HTTPS on the public listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenTls {
    pub cert_file: String,
    pub key_file: String,
    #[serde(default = "default_true")]
    pub http2: bool,
}

/// The Prometheus metrics listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: String,
}

/// The built-in authorization server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthServer {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default = "default_access_ttl")]
    pub access_token_ttl: HumanDuration,
    #[serde(default = "default_refresh_ttl")]
    pub refresh_token_ttl: HumanDuration,
    #[serde(default = "no_duration")]
    pub refresh_reuse_grace: HumanDuration,
    #[serde(default = "default_code_ttl")]
    pub code_ttl: HumanDuration,
    #[serde(default)]
    pub registration: RegistrationPolicy,
    #[serde(default)]
    pub registration_rate_limit: RawRegistrationRateLimit,
    pub initial_access_token: Option<String>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub client_metadata_documents: RawClientMetadataDocuments,
    #[serde(default)]
    pub signing_algorithm: SigningAlgorithm,
    #[serde(default)]
    pub identity_providers: Vec<RawIdentityProvider>,
    #[serde(default = "default_max_session_age")]
    pub max_session_age: HumanDuration,
    #[serde(default)]
    pub branding: RawBranding,
    #[serde(default)]
    pub access: Vec<RawAccessRule>,
}

/// A scope an upstream knows: its name, or its name with the description
/// the consent page shows.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawScope {
    Name(String),
    Described { name: String, description: String },
}

impl RawScope {
    pub fn name(&self) -> &str {
        match self {
            Self::Name(n) | Self::Described { name: n, .. } => n,
        }
    }
}

/// How the sign-in pages present the operator's product.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBranding {
    pub product_name: Option<String>,
    pub logo_file: Option<String>,
}

/// An upstream identity provider people sign in with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityProvider {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    pub issuer: Option<String>,
    /// Entra ID: the directory (tenant id or domain), or `organizations` /
    /// `common` for any work account.
    pub tenant: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Option<Vec<String>>,
    pub display_name: Option<String>,
    /// GitHub: the REST API (default `https://api.github.com`, or
    /// `<issuer>/api/v3` for GitHub Enterprise Server).
    pub api_url: Option<String>,
}

/// What kind of identity provider, and so which defaults apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenID Connect provider, discovered from its issuer.
    Oidc,
    /// Google (accounts.google.com).
    Google,
    /// Microsoft Entra ID (v2 endpoints of one tenant, or many).
    Microsoft,
    /// Okta (the issuer of an org or a custom authorization server).
    Okta,
    /// Keycloak (the issuer of a realm).
    Keycloak,
    /// Auth0 (the issuer of a tenant).
    Auth0,
    /// GitHub (OAuth 2.0 without OpenID Connect).
    Github,
}

/// One admission rule: who it matches and what they may grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessRule {
    pub when: RawAccessCondition,
    pub scopes: Vec<String>,
}

/// Conditions of a rule; all of the given ones must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessCondition {
    pub idp: Option<String>,
    pub email_domain: Option<String>,
    pub email_verified: Option<bool>,
    /// GitHub: a member of this organisation.
    pub org: Option<String>,
    /// GitHub: a member of this team (`org/team-slug`).
    pub team: Option<String>,
    #[serde(default)]
    pub claim: BTreeMap<String, String>,
}

/// Algorithm of the authorization server's keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 with SHA-256 (default).
    #[default]
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSA 2048 with SHA-256 (PKCS#1 v1.5), for relying parties without
    /// elliptic-curve support.
    RS256,
}

/// Where the authorization server keeps its state: SQLite in `data_dir`
/// unless `url` names a PostgreSQL database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStore {
    pub url: Option<String>,
    pub pool_size: u32,
    pub acquire_timeout: HumanDuration,
    pub statement_timeout: HumanDuration,
    pub max_staleness: HumanDuration,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: None,
            pool_size: 10,
            acquire_timeout: HumanDuration(Duration::from_secs(5)),
            statement_timeout: HumanDuration(Duration::from_secs(5)),
            max_staleness: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// How many clients one address may register.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRegistrationRateLimit {
    pub per_hour: u32,
    pub exempt_loopback: bool,
}

impl Default for RawRegistrationRateLimit {
    fn default() -> Self {
        Self {
            per_hour: 30,
            exempt_loopback: false,
        }
    }
}

/// Client ID Metadata Documents (a URL as `client_id`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawClientMetadataDocuments {
    pub enabled: bool,
    pub allow_private_addresses: bool,
    pub allow_http: bool,
    pub timeout: HumanDuration,
}

impl Default for RawClientMetadataDocuments {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_addresses: false,
            allow_http: false,
            timeout: HumanDuration(Duration::from_secs(5)),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_data_dir() -> String {
    "./data".to_owned()
}

fn default_access_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_refresh_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(30 * 24 * 3600))
}

fn default_code_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Who may register clients dynamically (RFC 7591).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationPolicy {
    /// Anyone (MCP clients register themselves).
    #[default]
    Open,
    /// Only with `Authorization: Bearer <initial_access_token>`.
    InitialAccessToken,
    /// No dynamic registration.
    Disabled,
}

/// A user who can log in at the built-in authorization server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub username: String,
    pub password_hash: String,
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn default_max_session_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// Process-level settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub worker_threads: usize,
    pub shutdown_grace_period: HumanDuration,
    pub config_watch_interval: HumanDuration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            worker_threads: 2,
            shutdown_grace_period: HumanDuration(Duration::from_secs(30)),
            config_watch_interval: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// Request limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub max_body_bytes: usize,
    pub max_header_bytes: usize,
    pub header_timeout: HumanDuration,
    pub body_timeout: HumanDuration,
    pub max_connections_per_address: usize,
    pub unauthenticated_per_address: Option<RawRate>,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 32 * 1024,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            body_timeout: HumanDuration(Duration::from_secs(30)),
            max_connections_per_address: 256,
            unauthenticated_per_address: None,
        }
    }
}

/// One upstream MCP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub name: String,
    pub path: String,
    pub url: Option<String>,
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub inherit_env: Option<Vec<String>>,
    pub cwd: Option<String>,
    pub isolation: Option<Isolation>,
    pub max_processes: Option<usize>,
    pub idle_timeout: Option<HumanDuration>,
    pub startup_timeout: Option<HumanDuration>,
    #[serde(default)]
    pub caller_env: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    pub resource_name: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub scopes: Option<Vec<RawScope>>,
    #[serde(default)]
    pub policy: RawPolicy,
    pub tls: Option<RawUpstreamTls>,
    #[serde(default)]
    pub rate_limits: RawRateLimits,
    pub forward_identity: Option<RawForwardIdentity>,
}

/// What an upstream is told about its caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwardIdentity {
    #[serde(default)]
    pub headers: BTreeMap<IdentityField, String>,
    pub jwt: Option<RawIdentityJwt>,
}

/// The gateway-signed identity JWT sent to an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityJwt {
    #[serde(default = "default_identity_header")]
    pub header: String,
    pub audience: Option<String>,
    #[serde(default = "default_identity_ttl")]
    pub ttl: HumanDuration,
}

fn default_identity_header() -> String {
    "x-gateway-identity".to_owned()
}

fn default_identity_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

/// Token-bucket limits on one upstream's authenticated callers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimits {
    pub per_subject: Option<RawRate>,
    pub per_client: Option<RawRate>,
    #[serde(default)]
    pub per_tool: BTreeMap<String, RawRate>,
}

/// A rate written as `10/s` (bursts of up to the count) or as
/// `{ rate: 10/s, burst: 20 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawRate(pub Rate);

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            rate: String,
            burst: Option<u32>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Short(String),
            Full(Full),
        }
        let (text, burst) = match Form::deserialize(de).map_err(|_| {
            serde::de::Error::custom(
                "a rate is written `10/s` or `{ rate: 10/s, burst: 20 }` (units s, min, h)",
            )
        })? {
            Form::Short(text) => (text, None),
            Form::Full(Full { rate, burst }) => (rate, burst),
        };
        parse_rate(&text, burst)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

/// `count/unit` with an optional burst (default: the count).
fn parse_rate(text: &str, burst: Option<u32>) -> Result<Rate, String> {
    let (count, unit) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate; write e.g. `10/s`, `600/min`, `1000/h`"))?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| format!("`{text}`: the count must be a number from 1 to 1000000"))?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        other => return Err(format!("`{text}`: unknown unit `{other}`; use s, min or h")),
    };
    let burst = burst.unwrap_or(count);
    if burst == 0 {
        return Err("burst must be at least 1".to_owned());
    }
    Ok(Rate::new(count, period, burst))
}

/// TLS to an `https://` upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstreamTls {
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    pub server_name: Option<String>,
    #[serde(default = "default_true")]
    pub http2: bool,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Which scopes each request to an upstream needs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawPolicy {
    pub base_scopes: Vec<String>,
    pub methods: BTreeMap<String, Vec<String>>,
    pub tools: BTreeMap<String, Vec<String>>,
    pub unlisted_tools: Option<UnlistedTools>,
    pub unlisted_methods: Option<UnlistedMethods>,
    pub filter_tools_list: Option<bool>,
}

/// Token sources and what the gateway publishes about them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub jwt_issuers: Vec<RawJwtIssuer>,
    #[serde(default)]
    pub introspection: Vec<RawIntrospection>,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub token_cache: RawTokenCache,
    #[serde(default)]
    pub sessions: RawSessions,
}

/// An issuer of JWT access tokens, verified locally.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawJwtIssuer {
    pub issuer: String,
    pub jwks_uri: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub hmac_secret: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_interval: HumanDuration,
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_interval: HumanDuration,
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout: HumanDuration,
    #[serde(default = "default_token_types")]
    pub token_types: Vec<String>,
}

/// RFC 9068's `at+jwt`, and the generic `JWT` most IdPs put on access
/// tokens.
fn default_token_types() -> Vec<String> {
    vec!["at+jwt".into(), "JWT".into()]
}

fn default_leeway() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_jwks_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

fn default_jwks_min_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

fn default_fetch_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// An RFC 7662 introspection endpoint for opaque tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIntrospection {
    pub url: String,
    pub token_prefix: Option<String>,
    pub issuer: Option<String>,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl: HumanDuration,
    #[serde(default = "default_inactive_ttl")]
    pub inactive_cache_ttl: HumanDuration,
    #[serde(default = "default_fetch_timeout")]
    pub timeout: HumanDuration,
}

fn default_cache_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}

fn default_inactive_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

/// Bounds of the verified-token cache.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTokenCache {
    pub max_entries: u64,
}

impl Default for RawTokenCache {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
        }
    }
}

/// How MCP session ids are sealed to their owners.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessions {
    pub secret: Option<String>,
}

/// Per-upstream timeouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTimeouts {
    pub connect: HumanDuration,
    pub response: HumanDuration,
    pub idle: Option<HumanDuration>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration(Duration::from_secs(5)),
            response: HumanDuration(Duration::from_secs(120)),
            idle: None,
        }
    }
}

/// Log output settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLogging {
    pub format: super::LogFormat,
    pub level: String,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            format: super::LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

fn no_duration() -> HumanDuration {
    HumanDuration(Duration::ZERO)
}

/// A duration written as `250ms`, `5s`, `2m`, `1h`, `30d`, or a bare number
/// of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Seconds(u64),
            Text(String),
        }
        match Form::deserialize(de)? {
            Form::Seconds(s) => Ok(Self(Duration::from_secs(s))),
            Form::Text(t) => parse_duration(&t)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a duration; write e.g. `250ms`, `5s`, `2m`, `1h` or `30d`")
    })?;
    let per_unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_rate};
    use crate::ratelimit::Rate;
    use std::time::Duration;

    #[test]
    fn durations_accept_the_documented_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn rates_take_a_count_a_unit_and_an_optional_burst() {
        let per = |s| Duration::from_secs(s);
        assert_eq!(parse_rate("10/s", None).unwrap(), Rate::new(10, per(1), 10));
        assert_eq!(
            parse_rate("600/min", Some(50)).unwrap(),
            Rate::new(600, per(60), 50)
        );
        assert_eq!(
            parse_rate(" 5 / h ", None).unwrap(),
            Rate::new(5, per(3600), 5)
        );
        for bad in ["10", "0/s", "-1/s", "10/d", "ten/s", "10/s/s"] {
            assert!(parse_rate(bad, None).is_err(), "{bad}");
        }
        assert!(parse_rate("10/s", Some(0)).is_err());
    }

    #[test]
    fn durations_refuse_unknown_units_and_junk() {
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
