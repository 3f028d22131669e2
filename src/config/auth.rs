//! The `auth:` section and each upstream's scope policy: typed values and
//! their validation. Errors stop the gateway from starting; warnings
//! (unreachable rules, methods no client sends) are printed by
//! `check-config` and logged at startup.

use super::raw::{RawAuth, RawIntrospection, RawJwtIssuer, RawPolicy, RawUpstream};
use super::ConfigError;
use crate::policy::{Glob, ScopePolicy, ToolRule, UnlistedTools, OFFLINE_ACCESS};
use jsonwebtoken::Algorithm;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How requests are authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// JWT issuers, tried first for JWT-shaped tokens whose `iss` they own.
    pub jwt_issuers: Vec<JwtIssuer>,
    /// Introspection endpoints, tried in order for every other token.
    pub introspection: Vec<IntrospectionEndpoint>,
    /// Published in each PRM document's `authorization_servers`.
    pub authorization_servers: Vec<String>,
    /// Most verified tokens kept in memory.
    pub token_cache_entries: u64,
    /// The key MCP session ids are sealed with (shared by replicas);
    /// random per process when unset.
    pub session_secret: Option<Secret>,
}

/// A secret from the configuration; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub(crate) fn new(text: String) -> Self {
        Self(text)
    }

    /// The secret's text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// An issuer of JWT access tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtIssuer {
    /// The exact `iss` value of its tokens.
    pub issuer: String,
    /// Where its keys are; `None`: read from its RFC 8414 / OIDC metadata.
    pub jwks_uri: Option<String>,
    /// Accepted `alg` values.
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS256/384/512, only when configured.
    pub hmac_secret: Option<Secret>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// How often the JWKS is fetched again.
    pub jwks_refresh_interval: Duration,
    /// Least time between two fetches triggered by unknown `kid`s.
    pub jwks_min_refresh_interval: Duration,
    /// Time limit of one metadata or JWKS fetch.
    pub fetch_timeout: Duration,
    /// `typ` header values accepted for access tokens (RFC 8725 §3.11),
    /// compared without case; a token without `typ` is accepted.
    pub token_types: Vec<String>,
}

impl JwtIssuer {
    /// Whether any accepted algorithm needs keys from a JWKS.
    pub fn uses_jwks(&self) -> bool {
        self.algorithms.iter().any(|a| !is_hmac(*a))
    }
}

/// An RFC 7662 introspection endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionEndpoint {
    /// Endpoint URL.
    pub url: String,
    /// Only tokens starting with this are sent here (`None`: every token).
    pub token_prefix: Option<String>,
    /// The issuer its principals get when the response has no `iss`.
    pub issuer: Option<String>,
    /// The gateway's client id at the endpoint.
    pub client_id: String,
    /// The gateway's client secret.
    pub client_secret: Secret,
    /// Longest time an active result is reused (never beyond its `exp`).
    pub cache_ttl: Duration,
    /// How long an inactive result is reused.
    pub inactive_cache_ttl: Duration,
    /// Time limit of one call.
    pub timeout: Duration,
}

fn is_hmac(a: Algorithm) -> bool {
    matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Validates the `auth:` section. `None` means authentication is disabled.
pub(super) fn validate_auth(
    raw: Option<&RawAuth>,
    builtin_issuer: Option<&str>,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Option<AuthConfig> {
    let implicit;
    let raw = match (raw, builtin_issuer) {
        (None, Some(_)) => {
            implicit = RawAuth::default();
            Some(&implicit)
        }
        (raw, _) => raw,
    };
    let Some(raw) = raw else {
        errors.push(ConfigError::new(
            "auth",
            "no `auth` section: every upstream would be open to anyone",
            "configure `auth.jwt_issuers` and/or `auth.introspection`, or write `auth: { disabled: true }` for local development",
        ));
        return None;
    };
    check_token_sources(raw, builtin_issuer, errors);
    if raw.disabled {
        return None;
    }
    let jwt_issuers = validate_issuers(&raw.jwt_issuers, errors);
    let introspection = validate_introspection_endpoints(&raw.introspection, errors, warnings);
    let authorization_servers =
        published_authorization_servers(raw, builtin_issuer, &jwt_issuers, &introspection, errors);
    check_cache_sizes(raw, errors);
    Some(AuthConfig {
        jwt_issuers,
        introspection,
        authorization_servers,
        token_cache_entries: raw.token_cache.max_entries,
        session_secret: raw.sessions.secret.clone().map(Secret),
    })
}

/// Token sources agree with `disabled`: none beside `disabled: true` (the
/// built-in authorization server counts as one), at least one otherwise.
fn check_token_sources(raw: &RawAuth, builtin_issuer: Option<&str>, errors: &mut Vec<ConfigError>) {
    let any_source =
        !raw.jwt_issuers.is_empty() || !raw.introspection.is_empty() || builtin_issuer.is_some();
    if raw.disabled && any_source {
        errors.push(ConfigError::new(
            "auth.disabled",
            "authentication is disabled but token sources (or the built-in authorization server) are configured",
            "remove `disabled: true`, or the token sources",
        ));
    } else if !raw.disabled && !any_source {
        errors.push(ConfigError::new(
            "auth",
            "no token source is configured",
            "add `jwt_issuers` or `introspection` entries",
        ));
    }
}

/// Each JWT issuer, listed once; only the valid ones are returned.
fn validate_issuers(raw: &[RawJwtIssuer], errors: &mut Vec<ConfigError>) -> Vec<JwtIssuer> {
    let mut seen = BTreeSet::new();
    raw.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let at = format!("auth.jwt_issuers[{i}]");
            if !seen.insert(r.issuer.as_str()) {
                errors.push(ConfigError::new(
                    &format!("{at}.issuer"),
                    format!("`{}` is listed twice", r.issuer),
                    "list each issuer once",
                ));
            }
            validate_issuer(r, &at, errors)
        })
        .collect()
}

/// Each introspection endpoint; only the valid ones are returned. Several
/// endpoints not all scoped by a `token_prefix` are a warning: a token goes
/// to every endpoint it may belong to.
fn validate_introspection_endpoints(
    raw: &[RawIntrospection],
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<IntrospectionEndpoint> {
    let endpoints: Vec<IntrospectionEndpoint> = raw
        .iter()
        .enumerate()
        .filter_map(|(i, r)| validate_introspection(r, &format!("auth.introspection[{i}]"), errors))
        .collect();
    if endpoints.len() > 1 && endpoints.iter().any(|e| e.token_prefix.is_none()) {
        warnings.push(ConfigError::new(
            "auth.introspection",
            "several endpoints, not all with a `token_prefix`: a token is shown to every endpoint it may belong to, so one IdP can see another's tokens",
            "give each endpoint the `token_prefix` of its tokens",
        ));
    }
    endpoints
}

/// The `authorization_servers` each PRM document publishes: the configured
/// ones (each a valid issuer URL), or else the built-in server's issuer,
/// then the JWT issuers, then the introspection endpoints' issuers, each
/// once. An empty list is an error unless a token source is invalid or
/// none is configured (both have errors of their own): clients could not
/// learn where to get a token.
fn published_authorization_servers(
    raw: &RawAuth,
    builtin_issuer: Option<&str>,
    jwt_issuers: &[JwtIssuer],
    introspection: &[IntrospectionEndpoint],
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let mut authorization_servers = raw.authorization_servers.clone();
    for (i, s) in authorization_servers.iter().enumerate() {
        if let Err(m) = check_endpoint_url(s) {
            errors.push(ConfigError::new(
                &format!("auth.authorization_servers[{i}]"),
                m,
                "write the issuer identifier of the authorization server",
            ));
        }
    }
    if authorization_servers.is_empty() {
        let builtin = builtin_issuer.map(str::to_owned);
        let issuers = builtin
            .into_iter()
            .chain(jwt_issuers.iter().map(|j| j.issuer.clone()));
        let introspected = introspection.iter().filter_map(|e| e.issuer.clone());
        for s in issuers.chain(introspected) {
            if !authorization_servers.contains(&s) {
                authorization_servers.push(s);
            }
        }
    }
    let all_valid = jwt_issuers.len() == raw.jwt_issuers.len()
        && introspection.len() == raw.introspection.len();
    if authorization_servers.is_empty()
        && all_valid
        && (!raw.jwt_issuers.is_empty() || !raw.introspection.is_empty())
    {
        errors.push(ConfigError::new(
            "auth.authorization_servers",
            "no authorization server to publish: clients could not learn where to get a token",
            "list the issuer of your authorization server, or set `issuer` on the introspection endpoint",
        ));
    }
    authorization_servers
}

/// The token cache must hold at least one entry; a session secret must be
/// long enough to be a key.
fn check_cache_sizes(raw: &RawAuth, errors: &mut Vec<ConfigError>) {
    if raw.token_cache.max_entries == 0 {
        errors.push(ConfigError::new(
            "auth.token_cache.max_entries",
            "zero entries",
            "use a positive number",
        ));
    }
    if raw.sessions.secret.as_ref().is_some_and(|s| s.len() < 32) {
        errors.push(ConfigError::new(
            "auth.sessions.secret",
            "shorter than 32 characters",
            "use a random value of at least 32 characters, e.g. `openssl rand -base64 32`, from an environment variable",
        ));
    }
}

/// `https`, or `http` to a loopback host (local IdPs and tests).
pub(crate) fn check_endpoint_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(format!("`{text}` has no host")),
    };
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`{text}` must use https (plain http only to a loopback address)"
        )),
    }
}

/// One JWT issuer; `None` when any of its values is invalid.
fn validate_issuer(r: &RawJwtIssuer, at: &str, errors: &mut Vec<ConfigError>) -> Option<JwtIssuer> {
    let before = errors.len();
    check_issuer_urls(r, at, errors);
    let algorithms = validate_algorithms(r, at, errors);
    if r.hmac_secret.as_ref().is_some_and(|s| s.len() < 32) {
        errors.push(ConfigError::new(
            &format!("{at}.hmac_secret"),
            "shorter than 32 bytes",
            "use a random secret of at least 32 bytes",
        ));
    }
    if r.leeway.0 > Duration::from_secs(300) {
        errors.push(ConfigError::new(
            &format!("{at}.leeway"),
            "more than 5 minutes",
            "fix the clocks instead; use at most `5m`",
        ));
    }
    if r.token_types.is_empty() {
        errors.push(ConfigError::new(
            &format!("{at}.token_types"),
            "empty list",
            "list the `typ` values of this issuer's access tokens (default: [at+jwt, JWT])",
        ));
    }
    for (field, d) in [
        ("jwks_refresh_interval", r.jwks_refresh_interval.0),
        ("jwks_min_refresh_interval", r.jwks_min_refresh_interval.0),
        ("fetch_timeout", r.fetch_timeout.0),
    ] {
        if d.is_zero() {
            errors.push(ConfigError::new(
                &format!("{at}.{field}"),
                "zero is not allowed",
                "use a positive duration",
            ));
        }
    }
    (errors.len() == before).then(|| JwtIssuer {
        issuer: r.issuer.clone(),
        jwks_uri: r.jwks_uri.clone(),
        algorithms,
        hmac_secret: r.hmac_secret.clone().map(Secret),
        leeway: r.leeway.0,
        jwks_refresh_interval: r.jwks_refresh_interval.0,
        jwks_min_refresh_interval: r.jwks_min_refresh_interval.0,
        fetch_timeout: r.fetch_timeout.0,
        token_types: r.token_types.clone(),
    })
}

/// The issuer and its `jwks_uri` (when given) are endpoint URLs: https, or
/// http to a loopback host.
fn check_issuer_urls(r: &RawJwtIssuer, at: &str, errors: &mut Vec<ConfigError>) {
    if let Err(m) = check_endpoint_url(&r.issuer) {
        errors.push(ConfigError::new(
            &format!("{at}.issuer"),
            m,
            "write the exact `iss` of the issuer's tokens",
        ));
    }
    if let Some(Err(m)) = r.jwks_uri.as_deref().map(check_endpoint_url) {
        errors.push(ConfigError::new(
            &format!("{at}.jwks_uri"),
            m,
            "or leave it out to read it from the issuer's metadata",
        ));
    }
}

/// The accepted `alg` values: the listed ones, each known and, for HMAC,
/// backed by `hmac_secret`; by default every asymmetric algorithm, plus
/// HS256/384/512 when a secret is set. An empty list is an error.
fn validate_algorithms(
    r: &RawJwtIssuer,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<Algorithm> {
    let algorithms = match &r.algorithms {
        None if r.hmac_secret.is_some() => {
            let mut all = ASYMMETRIC.to_vec();
            all.extend([Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]);
            all
        }
        None => ASYMMETRIC.to_vec(),
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let path = format!("{at}.algorithms[{i}]");
                match Algorithm::from_str(name) {
                    Ok(a) if is_hmac(a) && r.hmac_secret.is_none() => {
                        errors.push(ConfigError::new(&path, format!("`{name}` needs a shared secret"), "set `hmac_secret`, or use an asymmetric algorithm; HMAC keys are never taken from a JWKS"));
                        None
                    }
                    Ok(a) => Some(a),
                    Err(_) => {
                        errors.push(ConfigError::new(&path, format!("`{name}` is not an accepted algorithm"), "use RS256/384/512, PS256/384/512, ES256/384, EdDSA, or HS256/384/512 with `hmac_secret`; `none` is never accepted"));
                        None
                    }
                }
            })
            .collect(),
    };
    if r.algorithms.as_ref().is_some_and(Vec::is_empty) {
        errors.push(ConfigError::new(
            &format!("{at}.algorithms"),
            "empty list",
            "list at least one algorithm, or leave the field out",
        ));
    }
    algorithms
}

fn validate_introspection(
    r: &RawIntrospection,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<IntrospectionEndpoint> {
    let before = errors.len();
    if let Err(m) = check_endpoint_url(&r.url) {
        errors.push(ConfigError::new(
            &format!("{at}.url"),
            m,
            "write the RFC 7662 endpoint's URL",
        ));
    }
    if let Some(Err(m)) = r.issuer.as_deref().map(check_endpoint_url) {
        errors.push(ConfigError::new(
            &format!("{at}.issuer"),
            m,
            "write the issuer identifier of the authorization server",
        ));
    }
    if r.token_prefix.as_deref() == Some("") {
        errors.push(ConfigError::new(
            &format!("{at}.token_prefix"),
            "empty prefix",
            "leave it out to send every token here",
        ));
    }
    if r.client_id.is_empty() || r.client_secret.is_empty() {
        errors.push(ConfigError::new(
            at,
            "`client_id` and `client_secret` must not be empty",
            "use the credentials the authorization server gave the gateway",
        ));
    }
    if r.timeout.0.is_zero() || r.cache_ttl.0.is_zero() {
        errors.push(ConfigError::new(
            at,
            "`timeout` and `cache_ttl` must be positive",
            "use durations such as `5s` and `5m`",
        ));
    }
    (errors.len() == before).then(|| IntrospectionEndpoint {
        url: r.url.clone(),
        token_prefix: r.token_prefix.clone(),
        issuer: r.issuer.clone(),
        client_id: r.client_id.clone(),
        client_secret: Secret(r.client_secret.clone()),
        cache_ttl: r.cache_ttl.0,
        inactive_cache_ttl: r.inactive_cache_ttl.0,
        timeout: r.timeout.0,
    })
}

/// RFC 6749 §3.3 `scope-token`: printable ASCII without space, `"` or `\`.
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
}

/// Compiles an upstream's policy, checking scope names against its declared
/// `scopes` (when given) and reporting rules that can never apply.
pub(super) fn validate_policy(
    up: &RawUpstream,
    up_at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> ScopePolicy {
    let raw: &RawPolicy = &up.policy;
    let at = format!("{up_at}.policy");
    let scopes = policy_scopes(up, up_at, &at, errors, warnings);
    check_methods_are_sent_by_clients(raw, &at, warnings);
    let tools = tool_rules(raw, &at, errors);
    let unlisted = raw.unlisted_tools.unwrap_or(UnlistedTools::Deny);
    let policy = ScopePolicy::new(
        raw.base_scopes.clone(),
        raw.methods
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>(),
        tools,
        unlisted,
        raw.filter_tools_list.unwrap_or(true),
        scopes,
    )
    .with_unlisted_methods(
        raw.unlisted_methods.unwrap_or_default(),
        crate::mcp::CLIENT_METHODS,
    );
    warn_unreachable_rules(&policy, raw, &at, warnings);
    policy
}

/// Every scope the policy requires, with the path of the rule naming it:
/// base scopes, then method rules, then tool rules.
fn scope_references(raw: &RawPolicy, at: &str) -> Vec<(String, String)> {
    let mut used = Vec::new();
    let mut note = |path: String, scopes: &[String]| {
        for s in scopes {
            used.push((path.clone(), s.clone()));
        }
    };
    note(format!("{at}.base_scopes"), &raw.base_scopes);
    for (m, s) in &raw.methods {
        note(format!("{at}.methods.{m}"), s);
    }
    for (t, s) in &raw.tools {
        note(format!("{at}.tools.{t}"), s);
    }
    used
}

/// The upstream's scopes: the declared `scopes` (each a valid scope name),
/// then every other scope its policy requires, once. A policy scope must be
/// a valid name and, when `scopes` is given, one of them; `offline_access`
/// is only a warning and is not added.
fn policy_scopes(
    up: &RawUpstream,
    up_at: &str,
    at: &str,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<String> {
    let names: Option<Vec<String>> = up
        .scopes
        .as_ref()
        .map(|d| d.iter().map(|s| s.name().to_owned()).collect());
    let declared = names.as_deref();
    for (i, s) in declared.unwrap_or_default().iter().enumerate() {
        if !valid_scope(s) {
            errors.push(ConfigError::new(
                &format!("{up_at}.scopes[{i}]"),
                format!("`{}` is not a valid scope name", s.escape_default()),
                "use printable ASCII without spaces, quotes or backslashes",
            ));
        }
    }
    let mut scopes: Vec<String> = declared.map(<[String]>::to_vec).unwrap_or_default();
    for (path, s) in scope_references(&up.policy, at) {
        if !valid_scope(&s) {
            errors.push(ConfigError::new(
                &path,
                format!("`{}` is not a valid scope name", s.escape_default()),
                "use printable ASCII without spaces, quotes or backslashes",
            ));
        } else if declared.is_some_and(|d| !d.contains(&s)) {
            errors.push(ConfigError::new(
                &path,
                format!("scope `{s}` is not in the upstream's `scopes`"),
                "fix the spelling, or add it to `scopes`",
            ));
        } else if s == OFFLINE_ACCESS {
            warnings.push(ConfigError::new(
                &path,
                "`offline_access` asks for refresh tokens; it is not a permission to require",
                "remove it from the policy",
            ));
        } else if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    scopes
}

/// A method rule for a method no MCP client sends never applies: a warning.
fn check_methods_are_sent_by_clients(raw: &RawPolicy, at: &str, warnings: &mut Vec<ConfigError>) {
    for m in raw.methods.keys() {
        if !crate::mcp::CLIENT_METHODS.contains(&m.as_str()) {
            warnings.push(ConfigError::new(
                &format!("{at}.methods.{m}"),
                format!("`{m}` is not a method MCP clients send; this rule never applies"),
                "check the spelling (e.g. `resources/read`)",
            ));
        }
    }
}

/// The tool rules, in file order; an empty pattern is an error.
fn tool_rules(raw: &RawPolicy, at: &str, errors: &mut Vec<ConfigError>) -> Vec<ToolRule> {
    let mut tools = Vec::new();
    for (pattern, scopes) in &raw.tools {
        if pattern.is_empty() {
            errors.push(ConfigError::new(
                &format!("{at}.tools"),
                "empty tool pattern",
                "write a tool name or a glob such as `admin_*`",
            ));
            continue;
        }
        tools.push(ToolRule {
            pattern: Glob::new(pattern),
            scopes: scopes.clone(),
        });
    }
    tools
}

/// Warnings for rules that can never apply: a glob every tool of which an
/// earlier glob matches first, and `unlisted_tools` beside a `*` rule.
fn warn_unreachable_rules(
    policy: &ScopePolicy,
    raw: &RawPolicy,
    at: &str,
    warnings: &mut Vec<ConfigError>,
) {
    let globs = policy.globs();
    for (i, later) in globs.iter().enumerate() {
        if let Some(earlier) = globs[..i].iter().find(|e| e.pattern.covers(&later.pattern)) {
            warnings.push(ConfigError::new(
                &format!("{at}.tools.{}", later.pattern.as_str()),
                format!(
                    "unreachable: every tool it matches is matched first by `{}`",
                    earlier.pattern.as_str()
                ),
                "remove it, or make it more specific than the other pattern",
            ));
        }
    }
    if raw.unlisted_tools.is_some() && globs.iter().any(|g| g.pattern.covers(&Glob::new("*"))) {
        warnings.push(ConfigError::new(
            &format!("{at}.unlisted_tools"),
            "unreachable: a `*` rule matches every tool",
            "remove `unlisted_tools` or the `*` rule",
        ));
    }
}
