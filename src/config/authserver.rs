//! The `authorization_server:` section: the built-in OAuth 2.1 server's
//! storage, token lifetimes, registration policy and users.

use super::auth::Secret;
use super::federation::{validate_federation, AccessRule, IdentityProvider};
use super::raw::{RawAuthServer, RegistrationPolicy, SigningAlgorithm};
use super::ConfigError;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// The built-in authorization server, when enabled.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthServerConfig {
    /// Its issuer identifier: the public URL, byte for byte as published in
    /// every PRM's `authorization_servers`.
    pub issuer: String,
    /// Where the SQLite database (`gateway.db`) lives.
    pub data_dir: PathBuf,
    /// Which store holds the state.
    pub store: StoreConfig,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of a refresh-token family.
    pub refresh_token_ttl: Duration,
    /// How long the exact same refresh request, sent again (a retry, or a
    /// second replica), gets the first one's answer instead of counting as
    /// reuse; zero (the default): never.
    pub refresh_reuse_grace: Duration,
    /// Lifetime of authorization codes.
    pub code_ttl: Duration,
    /// Who may register clients.
    pub registration: RegistrationPolicy,
    /// Registrations allowed per address and hour (0: no limit).
    pub registrations_per_hour: u32,
    /// Whether loopback addresses register without limit (development).
    pub registration_exempts_loopback: bool,
    /// Token required by `registration: initial_access_token`.
    pub initial_access_token: Option<Secret>,
    /// Users who can log in.
    pub users: Vec<User>,
    /// Algorithm of newly generated signing keys.
    pub signing_algorithm: SigningAlgorithm,
    /// Client ID Metadata Documents, when enabled.
    pub client_metadata_documents: Option<ClientMetadataDocuments>,
    /// Identity providers people sign in with.
    pub identity_providers: Vec<IdentityProvider>,
    /// Who of them is admitted, with which scopes.
    pub access: Vec<AccessRule>,
    /// How long a sign-in at a provider carries refreshes before the person
    /// must sign in there again.
    pub max_session_age: Duration,
    /// The product name on the sign-in pages.
    pub product_name: String,
    /// A logo (PNG, SVG, JPEG or WebP, at most 64 KiB) on the pages.
    pub logo_file: Option<PathBuf>,
}

/// The backend of the authorization server's state.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// The SQLite file `gateway.db` in `data_dir` (one node).
    Sqlite,
    /// A PostgreSQL database, shared by replicas.
    Postgres(PostgresConfig),
}

/// A PostgreSQL store.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db?sslmode=...`; secret (holds
    /// the password), never logged.
    pub url: Secret,
    /// Most connections open at once.
    pub pool_size: u32,
    /// Longest wait for a free connection.
    pub acquire_timeout: Duration,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
    /// How old the proxy's copy of the revocations may grow while the
    /// database cannot be read; after that the built-in issuer's tokens are
    /// refused (503) until it can be read again.
    pub max_staleness: Duration,
}

/// Bounds of `store.max_staleness`.
const MIN_STALENESS: Duration = Duration::from_secs(1);
const MAX_STALENESS: Duration = Duration::from_secs(3600);

/// Largest logo accepted.
pub const MAX_LOGO_BYTES: usize = 64 * 1024;

/// How `client_id` URLs are fetched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientMetadataDocuments {
    /// Allow loopback and private-network targets (development, tests).
    pub allow_private_addresses: bool,
    /// Allow `http` URLs (development, tests).
    pub allow_http: bool,
    /// Time limit of one fetch.
    pub timeout: std::time::Duration,
}

/// A user of the login page.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Login name.
    pub username: String,
    /// Argon2id PHC string (`mcp-oauth-gateway hash-password` makes one).
    pub password_hash: Secret,
    /// The scopes this user may grant.
    pub scopes: BTreeSet<String>,
}

/// Validates the `authorization_server:` section. `None` when it is absent
/// or disabled.
pub(super) fn validate_authserver(
    raw: Option<&RawAuthServer>,
    issuer: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<AuthServerConfig> {
    let raw = raw.filter(|r| r.enabled)?;
    let at = "authorization_server";
    check_public_url_as_issuer(issuer, errors);
    let users = validate_users(raw, at, errors);
    let (identity_providers, access) = validate_federation(raw, at, errors);
    check_initial_access_token(raw, at, errors);
    check_lifetimes(raw, at, errors);
    Some(AuthServerConfig {
        issuer: issuer.to_owned(),
        data_dir: PathBuf::from(&raw.data_dir),
        store: validate_store(raw, at, errors),
        access_token_ttl: raw.access_token_ttl.0,
        refresh_token_ttl: raw.refresh_token_ttl.0,
        refresh_reuse_grace: raw.refresh_reuse_grace.0,
        code_ttl: raw.code_ttl.0,
        registration: raw.registration,
        registrations_per_hour: raw.registration_rate_limit.per_hour,
        registration_exempts_loopback: raw.registration_rate_limit.exempt_loopback,
        initial_access_token: raw.initial_access_token.clone().map(Secret::new),
        users,
        identity_providers,
        access,
        max_session_age: raw.max_session_age.0,
        product_name: branding_name(raw, at, errors),
        logo_file: raw.branding.logo_file.as_ref().map(PathBuf::from),
        signing_algorithm: raw.signing_algorithm,
        client_metadata_documents: raw.client_metadata_documents.enabled.then_some(
            ClientMetadataDocuments {
                allow_private_addresses: raw.client_metadata_documents.allow_private_addresses,
                allow_http: raw.client_metadata_documents.allow_http,
                timeout: raw.client_metadata_documents.timeout.0,
            },
        ),
    })
}

/// `store:`: SQLite unless `url` is a `postgres://` (or `postgresql://`)
/// URL; a pool of 1-1000 connections; timeouts above zero.
fn validate_store(raw: &RawAuthServer, at: &str, errors: &mut Vec<ConfigError>) -> StoreConfig {
    let s = &raw.store;
    let Some(url) = &s.url else {
        return StoreConfig::Sqlite;
    };
    let scheme_ok = ["postgres://", "postgresql://"]
        .iter()
        .any(|p| url.starts_with(p));
    if !scheme_ok || url::Url::parse(url).is_err() {
        errors.push(ConfigError::new(
            &format!("{at}.store.url"),
            "not a PostgreSQL URL".to_owned(),
            "write `postgres://user:${PGPASSWORD}@host:5432/database` (leave `url` out for the SQLite file in data_dir)",
        ));
    }
    if !(1..=1000).contains(&s.pool_size) {
        errors.push(ConfigError::new(
            &format!("{at}.store.pool_size"),
            format!("{} is not between 1 and 1000", s.pool_size),
            "a few connections per replica are enough (default 10)",
        ));
    }
    for (name, value) in [
        ("acquire_timeout", s.acquire_timeout.0),
        ("statement_timeout", s.statement_timeout.0),
    ] {
        if value.is_zero() {
            errors.push(ConfigError::new(
                &format!("{at}.store.{name}"),
                "must be above zero".to_owned(),
                "a few seconds (default 5s)",
            ));
        }
    }
    if !(MIN_STALENESS..=MAX_STALENESS).contains(&s.max_staleness.0) {
        errors.push(ConfigError::new(
            &format!("{at}.store.max_staleness"),
            format!("{:?} is out of range", s.max_staleness.0),
            format!("between {MIN_STALENESS:?} and {MAX_STALENESS:?} (default 30s): the revocations are read again every 5 s"),
        ));
    }
    StoreConfig::Postgres(PostgresConfig {
        url: Secret::new(url.clone()),
        pool_size: s.pool_size,
        acquire_timeout: s.acquire_timeout.0,
        statement_timeout: s.statement_timeout.0,
        max_staleness: s.max_staleness.0,
    })
}

/// The product name of the pages: 1-64 characters (default "MCP gateway").
fn branding_name(raw: &RawAuthServer, at: &str, errors: &mut Vec<ConfigError>) -> String {
    let name = raw
        .branding
        .product_name
        .clone()
        .unwrap_or_else(|| "MCP gateway".to_owned());
    if name.trim().is_empty() || name.chars().count() > 64 {
        errors.push(ConfigError::new(
            &format!("{at}.branding.product_name"),
            "empty or longer than 64 characters",
            "give the name people know your service by",
        ));
    }
    name
}

/// The logo as a `data:` URL for the pages (their CSP allows no other
/// image source), checked: a known image type, at most 64 KiB.
pub fn logo_data_url(path: &std::path::Path) -> Result<String, String> {
    use base64::Engine;
    let mime = match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        _ => {
            return Err(format!(
                "{}: not a .png, .svg, .jpg or .webp file",
                path.display()
            ))
        }
    };
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_LOGO_BYTES {
        return Err(format!(
            "{}: larger than {MAX_LOGO_BYTES} bytes",
            path.display()
        ));
    }
    Ok(format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The public URL is the server's issuer identifier: it must have no path
/// (the endpoints and metadata live at the root) and use https, or http on
/// a loopback address.
fn check_public_url_as_issuer(issuer: &str, errors: &mut Vec<ConfigError>) {
    if url::Url::parse(issuer).is_ok_and(|u| u.path() != "/") {
        errors.push(ConfigError::new(
            "public_url",
            "the built-in authorization server needs a public URL without a path",
            "serve the gateway at the root of its origin (its endpoints and metadata live at /authorize, /.well-known/...)",
        ));
    }
    if issuer.starts_with("http://") && super::auth::check_endpoint_url(issuer).is_err() {
        errors.push(ConfigError::new(
            "public_url",
            "the built-in authorization server needs an https public URL (plain http only on a loopback address)",
            "serve the gateway behind TLS and set public_url to its https:// address",
        ));
    }
}

/// The users of the login page: unique names of 1-128 characters, each
/// with an argon2id password hash.
fn validate_users(raw: &RawAuthServer, at: &str, errors: &mut Vec<ConfigError>) -> Vec<User> {
    let mut names = BTreeSet::new();
    let mut users = Vec::new();
    for (i, u) in raw.users.iter().enumerate() {
        let path = format!("{at}.users[{i}]");
        if u.username.is_empty() || u.username.len() > 128 || !names.insert(u.username.as_str()) {
            errors.push(ConfigError::new(
                &format!("{path}.username"),
                format!("`{}` is empty, too long or listed twice", u.username),
                "give each user a unique name of 1-128 characters",
            ));
        }
        if u.username.contains('|') {
            errors.push(ConfigError::new(
                &format!("{path}.username"),
                format!(
                    "`{}` contains `|`, which marks people of identity providers (`corp|<sub>`)",
                    u.username
                ),
                "pick a name without `|`",
            ));
        }
        let hash_ok = u.password_hash.starts_with("$argon2id$")
            && argon2::PasswordHash::new(&u.password_hash).is_ok();
        if !hash_ok {
            errors.push(ConfigError::new(
                &format!("{path}.password_hash"),
                "not an argon2id PHC string",
                "make one with `mcp-oauth-gateway hash-password`",
            ));
        }
        users.push(User {
            username: u.username.clone(),
            password_hash: Secret::new(u.password_hash.clone()),
            scopes: u.scopes.iter().cloned().collect(),
        });
    }
    users
}

/// `registration: initial_access_token` needs a token of at least 32
/// characters.
fn check_initial_access_token(raw: &RawAuthServer, at: &str, errors: &mut Vec<ConfigError>) {
    if raw.registration == RegistrationPolicy::InitialAccessToken
        && raw
            .initial_access_token
            .as_ref()
            .is_none_or(|t| t.len() < 32)
    {
        errors.push(ConfigError::new(
            &format!("{at}.initial_access_token"),
            "missing or shorter than 32 characters",
            "set a random token of at least 32 characters, e.g. from the environment",
        ));
    }
}

/// The longest `refresh_reuse_grace`.
const MAX_REFRESH_REUSE_GRACE: Duration = Duration::from_secs(60);

/// Access tokens, refresh-token families and authorization codes each live
/// for a positive time, at most a day, a year and 10 minutes.
fn check_lifetimes(raw: &RawAuthServer, at: &str, errors: &mut Vec<ConfigError>) {
    for (field, d, max) in [
        (
            "access_token_ttl",
            raw.access_token_ttl.0,
            Duration::from_secs(24 * 3600),
        ),
        (
            "refresh_token_ttl",
            raw.refresh_token_ttl.0,
            Duration::from_secs(365 * 24 * 3600),
        ),
        ("code_ttl", raw.code_ttl.0, Duration::from_secs(600)),
        (
            "max_session_age",
            raw.max_session_age.0,
            Duration::from_secs(365 * 24 * 3600),
        ),
    ] {
        if d.is_zero() || d > max {
            errors.push(ConfigError::new(
                &format!("{at}.{field}"),
                format!("{d:?} is out of range"),
                format!("use a positive duration of at most {max:?}"),
            ));
        }
    }
    if raw.refresh_reuse_grace.0 > MAX_REFRESH_REUSE_GRACE {
        errors.push(ConfigError::new(
            &format!("{at}.refresh_reuse_grace"),
            format!("{:?} is too long", raw.refresh_reuse_grace.0),
            format!("use at most {MAX_REFRESH_REUSE_GRACE:?}: within it a stolen refresh token replayed gets tokens instead of revoking the family"),
        ));
    }
}
