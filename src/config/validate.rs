//! Turns the raw YAML schema into a [`Config`], collecting every error with
//! the path of the value it concerns and a hint on what is expected.

use super::raw::{RawConfig, RawUpstream};
use super::{
    ClientCertFiles, Config, ConfigError, ConfigErrors, Limits, PublicUrl, Target, Timeouts,
    Upstream, UpstreamTarget, UpstreamTls,
};
use http::{HeaderName, HeaderValue};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Headers the gateway owns on upstream requests: framing, routing and the
/// client's credentials. Configuring them would break the proxy or its
/// security guarantees.
pub(super) const RESERVED_UPSTREAM_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let (public_url, listen, metrics_listen) = validate_addresses(&raw, &mut errors);
    let limits = validate_server_and_limits(&raw, &mut errors);
    let allowed_origins = validate_origins(&raw, &mut errors);
    if raw.upstreams.is_empty() {
        errors.push(ConfigError::new(
            "upstreams",
            "no upstream is configured".to_owned(),
            "add at least one `{ name, path, url }` entry",
        ));
    }
    let issuer = public_url.as_ref().map_or("", |u| u.as_str());
    let authorization_server = super::authserver::validate_authserver(
        raw.authorization_server.as_ref(),
        issuer,
        &mut errors,
    );
    let builtin = authorization_server.as_ref().map(|a| a.issuer.as_str());
    let auth = super::auth::validate_auth(raw.auth.as_ref(), builtin, &mut errors, &mut warnings);
    let auth_disabled = auth.is_none() && raw.auth.as_ref().is_some_and(|a| a.disabled);
    let upstreams = validate_upstreams(&raw, issuer, auth_disabled, &mut errors, &mut warnings);

    match (public_url, listen, errors.is_empty()) {
        (Some(public_url), Some(listen), true) => Ok(Config {
            public_url,
            listen,
            worker_threads: raw.server.worker_threads,
            shutdown_grace_period: raw.server.shutdown_grace_period.0,
            limits,
            allowed_origins,
            upstreams,
            auth,
            authorization_server,
            metrics_listen,
            warnings,
            log_format: raw.logging.format,
            log_level: raw.logging.level,
            identity_key_file: raw.identity_key_file.map(std::path::PathBuf::from),
            config_watch_interval: raw.server.config_watch_interval.0,
            source: None,
            listen_tls: raw.tls.as_ref().map(|t| super::ListenTls {
                cert_file: t.cert_file.clone().into(),
                key_file: t.key_file.clone().into(),
                http2: t.http2,
            }),
        }),
        _ => Err(ConfigErrors(errors)),
    }
}

/// The public URL, the listener and the metrics listener.
fn validate_addresses(
    raw: &RawConfig,
    errors: &mut Vec<ConfigError>,
) -> (Option<PublicUrl>, Option<SocketAddr>, Option<SocketAddr>) {
    let mut err = |path: &str, message: String, hint: &str| {
        errors.push(ConfigError::new(path, message, hint));
    };
    let public_url = match parse_public_url(&raw.public_url) {
        Ok(u) => Some(u),
        Err(m) => {
            err(
                "public_url",
                m,
                "write the URL clients use to reach the gateway, e.g. `https://mcp.example.com`",
            );
            None
        }
    };
    if let (Some(url), Some(_)) = (&public_url, &raw.tls) {
        if url.as_str().starts_with("http://") {
            err(
                "public_url",
                format!("`{url}` is http:// but the listener serves HTTPS (`tls`)"),
                "write the https:// URL clients use, e.g. `https://mcp.example.com`",
            );
        }
    }
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                "listen",
                format!("`{}` is not an address", raw.listen),
                "write `IP:PORT`, e.g. `0.0.0.0:8080`",
            );
            None
        }
    };
    let metrics_listen = match raw.metrics.as_ref().map(|m| m.listen.parse::<SocketAddr>()) {
        None => None,
        Some(Ok(a)) if Some(a) == listen => {
            err(
                "metrics.listen",
                format!("`{a}` is the public listener's address"),
                "give /metrics its own port, e.g. `127.0.0.1:9464`",
            );
            None
        }
        Some(Ok(a)) => Some(a),
        Some(Err(_)) => {
            err(
                "metrics.listen",
                "not an address".to_owned(),
                "write `IP:PORT`, e.g. `127.0.0.1:9464`",
            );
            None
        }
    };
    (public_url, listen, metrics_listen)
}

/// Worker threads, the shutdown grace period and the request limits.
fn validate_server_and_limits(raw: &RawConfig, errors: &mut Vec<ConfigError>) -> Limits {
    let mut err = |path: &str, message: String, hint: &str| {
        errors.push(ConfigError::new(path, message, hint));
    };
    if !(1..=1024).contains(&raw.server.worker_threads) {
        err(
            "server.worker_threads",
            format!("{} is out of range", raw.server.worker_threads),
            "use 1 to 1024 (usually the number of cores)",
        );
    }
    if raw.server.shutdown_grace_period.0 > Duration::from_secs(3600) {
        err(
            "server.shutdown_grace_period",
            "longer than an hour".to_owned(),
            "use at most `1h`",
        );
    }
    let watch = raw.server.config_watch_interval.0;
    if !watch.is_zero()
        && !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&watch)
    {
        err(
            "server.config_watch_interval",
            format!("{watch:?} is out of range"),
            "use `100ms` to `1h`, or `0s` to reload on SIGHUP only (default `2s`)",
        );
    }
    let limits = &raw.limits;
    if !(1024..=64 * 1024 * 1024).contains(&limits.max_body_bytes) {
        err(
            "limits.max_body_bytes",
            format!("{} is out of range", limits.max_body_bytes),
            "use 1024 to 67108864 bytes (default 1048576)",
        );
    }
    if !(1024..=64 * 1024).contains(&limits.max_header_bytes) {
        err(
            "limits.max_header_bytes",
            format!("{} is out of range", limits.max_header_bytes),
            "use 1024 to 65536 bytes (default 32768)",
        );
    }
    for (field, d) in [
        ("limits.header_timeout", limits.header_timeout.0),
        ("limits.body_timeout", limits.body_timeout.0),
    ] {
        if d.is_zero() || d > Duration::from_secs(600) {
            err(
                field,
                format!("{d:?} is out of range"),
                "use more than 0 and at most `10m`",
            );
        }
    }
    Limits {
        max_body_bytes: limits.max_body_bytes,
        max_header_bytes: limits.max_header_bytes,
        header_timeout: limits.header_timeout.0,
        body_timeout: limits.body_timeout.0,
        max_connections_per_address: limits.max_connections_per_address,
        unauthenticated_per_address: limits.unauthenticated_per_address.map(|r| r.0),
    }
}

/// The browser origins allowed besides the public URL's.
fn validate_origins(raw: &RawConfig, errors: &mut Vec<ConfigError>) -> Vec<String> {
    let mut allowed_origins = Vec::new();
    for (i, origin) in raw.allowed_origins.iter().enumerate() {
        match normalise_origin(origin) {
            Ok(o) => allowed_origins.push(o),
            Err(m) => errors.push(ConfigError::new(
                &format!("allowed_origins[{i}]"),
                m,
                "write `scheme://host[:port]`, e.g. `https://app.example.com`",
            )),
        }
    }
    allowed_origins
}

/// Every upstream with its policy; names, paths and audiences distinct.
fn validate_upstreams(
    raw: &RawConfig,
    base: &str,
    auth_disabled: bool,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<ConfigError>,
) -> Vec<Upstream> {
    let mut upstreams = Vec::new();
    let mut names = HashSet::new();
    for (i, up) in raw.upstreams.iter().enumerate() {
        let at = format!("upstreams[{i}]");
        if !names.insert(up.name.as_str()) {
            errors.push(ConfigError::new(
                &format!("{at}.name"),
                format!("`{}` is used by an earlier upstream", up.name),
                "give each upstream a unique name",
            ));
        }
        let policy = super::auth::validate_policy(up, &at, errors, warnings);
        if auth_disabled && policy_is_set(up) {
            warnings.push(ConfigError::new(
                &format!("{at}.policy"),
                "authentication is disabled, so this policy is not enforced",
                "enable `auth` to enforce scopes",
            ));
        }
        if up.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
            warnings.push(ConfigError::new(
                &format!("{at}.tls.insecure_skip_verify"),
                "the upstream's certificate and name are not verified".to_owned(),
                "anyone on the network path can impersonate it; trust its CA with `ca_file` instead",
            ));
        }
        let rate_limits =
            super::rate_limits::validate_rate_limits(&up.rate_limits, &at, auth_disabled, errors);
        let identity = super::identity::validate_forward_identity(up, &at, auth_disabled, errors);
        match validate_upstream(
            up,
            &at,
            base,
            policy,
            (rate_limits, identity),
            auth_disabled,
        ) {
            Ok(u) => upstreams.push(u),
            Err(mut e) => errors.append(&mut e),
        }
    }
    check_paths_disjoint(&raw.upstreams, errors);
    check_audiences_distinct(&upstreams, errors);
    upstreams
}

fn parse_public_url(text: &str) -> Result<PublicUrl, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("`{text}` must use http or https"));
    }
    if url.host_str().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(format!("`{text}` needs a host and no user info"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{text}` must not have a query or fragment"));
    }
    let normalised = url.as_str().trim_end_matches('/').to_owned();
    Ok(PublicUrl(normalised))
}

/// Normalises an origin to the form browsers send (`scheme://host[:port]`,
/// lowercase, default port omitted).
pub(crate) fn normalise_origin(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not an origin ({e})"))?;
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(format!(
            "`{text}` must be only `scheme://host[:port]`, without a path"
        ));
    }
    match url.origin() {
        o @ url::Origin::Tuple(..) => Ok(o.ascii_serialization()),
        url::Origin::Opaque(_) => Err(format!("`{text}` has no origin (use http or https)")),
    }
}

fn policy_is_set(up: &RawUpstream) -> bool {
    let p = &up.policy;
    !p.base_scopes.is_empty() || !p.methods.is_empty() || !p.tools.is_empty()
}

/// One upstream (name, path, URL, headers, timeouts) around its compiled
/// policy; `Err` holds every error found.
fn validate_upstream(
    up: &RawUpstream,
    at: &str,
    public_url: &str,
    policy: crate::policy::ScopePolicy,
    (rate_limits, identity): (super::RateLimits, Option<super::ForwardIdentity>),
    auth_disabled: bool,
) -> Result<Upstream, Vec<ConfigError>> {
    let mut errors = Vec::new();
    check_audiences_not_blank(up, at, &mut errors);
    check_upstream_name(&up.name, at, &mut errors);
    if let Err(m) = check_public_path(&up.path) {
        errors.push(ConfigError::new(
            &format!("{at}.path"),
            m,
            "write an absolute path such as `/github/mcp`, no trailing slash",
        ));
    }
    let target = validate_target(up, at, auth_disabled, &mut errors);
    let headers = validate_headers(up, at, &mut errors);
    let timeouts = validate_timeouts(up, at, &mut errors);
    let tls = match &target {
        Some(Target::Http(t)) => validate_tls(up, t, at, &mut errors),
        _ => None,
    };
    match target {
        Some(target) if errors.is_empty() => Ok(Upstream {
            name: up.name.clone(),
            path: up.path.clone(),
            target,
            headers,
            timeouts,
            resource: format!("{public_url}{}", up.path),
            extra_audiences: up.audiences.clone(),
            resource_name: up.resource_name.clone().unwrap_or_else(|| up.name.clone()),
            scope_descriptions: up
                .scopes
                .iter()
                .flatten()
                .filter_map(|s| match s {
                    super::raw::RawScope::Described { name, description } => {
                        Some((name.clone(), description.clone()))
                    }
                    super::raw::RawScope::Name(_) => None,
                })
                .collect(),
            policy: std::sync::Arc::new(policy),
            tls,
            rate_limits,
            identity,
        }),
        _ => Err(errors),
    }
}

/// The TLS settings of an `https://` upstream (`None` for `http://`, where
/// a `tls` section is an error).
fn validate_tls(
    up: &RawUpstream,
    target: &UpstreamTarget,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<UpstreamTls> {
    if !target.tls {
        if up.tls.is_some() {
            errors.push(ConfigError::new(
                &format!("{at}.tls"),
                "TLS settings for an `http://` upstream".to_owned(),
                "use an `https://` url, or remove `tls`",
            ));
        }
        return None;
    }
    let raw = up.tls.as_ref();
    let client_cert = match raw.map(|t| (&t.client_cert_file, &t.client_key_file)) {
        Some((Some(cert), Some(key))) => Some(ClientCertFiles {
            cert_file: cert.into(),
            key_file: key.into(),
        }),
        Some((Some(_), None) | (None, Some(_))) => {
            errors.push(ConfigError::new(
                &format!("{at}.tls"),
                "a client certificate needs both `client_cert_file` and `client_key_file`"
                    .to_owned(),
                "set both, or neither",
            ));
            None
        }
        _ => None,
    };
    let server_name = raw
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| target.host.clone());
    if pingora::tls::ServerName::try_from(server_name.as_str()).is_err() {
        errors.push(ConfigError::new(
            &format!("{at}.tls.server_name"),
            format!("`{server_name}` is not a DNS name or IP address"),
            "write the name the upstream's certificate is issued for",
        ));
    }
    Some(UpstreamTls {
        server_name,
        ca_file: raw.and_then(|t| t.ca_file.as_ref()).map(Into::into),
        client_cert,
        http2: raw.is_none_or(|t| t.http2),
        verify: raw.is_none_or(|t| !t.insecure_skip_verify),
    })
}

/// Extra audiences must not be blank.
fn check_audiences_not_blank(up: &RawUpstream, at: &str, errors: &mut Vec<ConfigError>) {
    for (i, aud) in up.audiences.iter().enumerate() {
        if aud.trim().is_empty() {
            errors.push(ConfigError::new(
                &format!("{at}.audiences[{i}]"),
                "empty audience".to_owned(),
                "write the extra `aud` value tokens for this upstream may carry",
            ));
        }
    }
}

/// An upstream name is 1-64 characters of `a-z`, `0-9`, `-` and `_`.
fn check_upstream_name(name: &str, at: &str, errors: &mut Vec<ConfigError>) {
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid_name {
        errors.push(ConfigError::new(
            &format!("{at}.name"),
            format!("`{name}` is not a valid name"),
            "use 1-64 characters of a-z, 0-9, `-` and `_`",
        ));
    }
}

/// The extra headers sent upstream: valid names and values, none of the
/// [`RESERVED_UPSTREAM_HEADERS`].
fn validate_headers(
    up: &RawUpstream,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (name, value) in &up.headers {
        let path = format!("{at}.headers.{name}");
        match (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            (Ok(n), _) if RESERVED_UPSTREAM_HEADERS.contains(&n.as_str()) => {
                errors.push(ConfigError::new(
                    &path,
                    format!("`{name}` is managed by the gateway"),
                    "remove it; the gateway sets framing, routing and MCP headers itself",
                ))
            }
            (Ok(n), Ok(v)) => headers.push((n, v)),
            (Err(_), _) => errors.push(ConfigError::new(
                &path,
                format!("`{name}` is not a valid header name"),
                "use letters, digits and `-`",
            )),
            (_, Err(_)) => errors.push(ConfigError::new(
                &path,
                "the value has characters not allowed in a header".to_owned(),
                "remove control characters and newlines",
            )),
        }
    }
    headers
}

/// The upstream's timeouts; none may be zero (`idle` may be left out).
fn validate_timeouts(up: &RawUpstream, at: &str, errors: &mut Vec<ConfigError>) -> Timeouts {
    let t = &up.timeouts;
    for (field, d) in [
        ("connect", Some(t.connect.0)),
        ("response", Some(t.response.0)),
        ("idle", t.idle.map(|d| d.0)),
    ] {
        if d == Some(Duration::ZERO) {
            errors.push(ConfigError::new(
                &format!("{at}.timeouts.{field}"),
                "zero is not a timeout".to_owned(),
                "use a positive duration such as `5s`, or leave `idle` out for none",
            ));
        }
    }
    Timeouts {
        connect: t.connect.0,
        response: t.response.0,
        idle: t.idle.map(|d| d.0),
    }
}

fn check_public_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path == "/" {
        return Err(format!(
            "`{path}` must start with `/` and name a path below the root"
        ));
    }
    if path.ends_with('/') {
        return Err(format!("`{path}` must not end with `/`"));
    }
    let bad_char = |c: char| !(c.is_ascii_alphanumeric() || "/-._~".contains(c));
    if path.chars().any(bad_char)
        || path.split('/').any(|seg| seg == "." || seg == "..")
        || path.contains("//")
    {
        return Err(format!(
            "`{path}` may only hold segments of letters, digits, `-`, `.`, `_`, `~`"
        ));
    }
    if path == "/.well-known" || path.starts_with("/.well-known/") {
        return Err(format!("`{path}` is reserved for discovery documents"));
    }
    if crate::proxy::HEALTH_PATHS.contains(&path) {
        return Err(format!(
            "`{path}` is reserved for the gateway's health checks"
        ));
    }
    Ok(())
}

/// Where the upstream at `at` is served: exactly one of `url` (HTTP) and
/// `command` (stdio).
fn validate_target(
    up: &RawUpstream,
    at: &str,
    auth_disabled: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<Target> {
    match (&up.url, &up.command) {
        (Some(url), None) => {
            super::stdio::refuse_stdio_keys(up, at, errors);
            parse_target(url)
                .map_err(|m| {
                    errors.push(ConfigError::new(
                        &format!("{at}.url"),
                        m,
                        "write the upstream's Streamable HTTP endpoint, e.g. `http://127.0.0.1:3001/mcp`",
                    ))
                })
                .ok()
                .map(Target::Http)
        }
        (None, Some(command)) => {
            for (key, set) in [
                ("headers", !up.headers.is_empty()),
                ("tls", up.tls.is_some()),
                ("forward_identity", up.forward_identity.is_some()),
            ] {
                if set {
                    errors.push(ConfigError::new(
                        &format!("{at}.{key}"),
                        format!("`{key}` applies to an HTTP upstream, not to a stdio `command`"),
                        "remove it (a stdio program gets its settings from `env`, and the caller from `caller_env`)",
                    ));
                }
            }
            super::stdio::validate_stdio(up, command, at, auth_disabled, errors).map(Target::Stdio)
        }
        (Some(_), Some(_)) => {
            errors.push(ConfigError::new(
                at,
                "both `url` and `command` are set".to_owned(),
                "an upstream is either a Streamable HTTP server (`url`) or a stdio program (`command`): keep one",
            ));
            None
        }
        (None, None) => {
            errors.push(ConfigError::new(
                at,
                "neither `url` nor `command` is set".to_owned(),
                "write `url: http://127.0.0.1:3001/mcp` for a Streamable HTTP server, or `command: [program, args…]` for a stdio one",
            ));
            None
        }
    }
}

fn parse_target(text: &str) -> Result<UpstreamTarget, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{text}` uses `{}`; only http and https are supported",
            url.scheme()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "`{text}` must not have user info, a query or a fragment"
        ));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(h) => h.to_string(),
        None => return Err(format!("`{text}` has no host")),
    };
    let port = url.port_or_known_default().unwrap_or(80);
    let tls = url.scheme() == "https";
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    Ok(UpstreamTarget {
        url: text.to_owned(),
        host,
        port,
        authority,
        path: url.path().trim_end_matches('/').to_owned(),
        tls,
    })
}

/// Public paths must not nest: each is its own protected resource, and a
/// request must belong to exactly one of them.
fn check_paths_disjoint(raw: &[RawUpstream], errors: &mut Vec<ConfigError>) {
    for (i, a) in raw.iter().enumerate() {
        for b in &raw[..i] {
            let nested = a.path == b.path
                || a.path.starts_with(&format!("{}/", b.path))
                || b.path.starts_with(&format!("{}/", a.path));
            if nested {
                errors.push(ConfigError::new(
                    &format!("upstreams[{i}].path"),
                    format!(
                        "`{}` overlaps `{}` of upstream `{}`",
                        a.path, b.path, b.name
                    ),
                    "give each upstream a path that is not inside another's",
                ));
            }
        }
    }
}

/// An extra audience must name one upstream only, and never another
/// upstream's resource URL: otherwise a token for one would open the other.
fn check_audiences_distinct(upstreams: &[Upstream], errors: &mut Vec<ConfigError>) {
    for (i, up) in upstreams.iter().enumerate() {
        for (j, aud) in up.extra_audiences.iter().enumerate() {
            let clash = upstreams.iter().enumerate().find(|(k, other)| {
                *k != i && (other.resource == *aud || other.extra_audiences.contains(aud))
            });
            if let Some((_, other)) = clash {
                errors.push(ConfigError::new(
                    &format!("upstreams[{i}].audiences[{j}]"),
                    format!("`{aud}` is also accepted by upstream `{}`", other.name),
                    "tokens for one upstream must not open another; give each its own audiences",
                ));
            }
        }
    }
}
