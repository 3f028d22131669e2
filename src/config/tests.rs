use super::*;
use crate::ratelimit::Rate;

const MINIMAL: &str = "
public_url: https://mcp.example.com/
auth: { disabled: true }
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://127.0.0.1:3001/mcp
";

fn errors_of(yaml: &str) -> Vec<ConfigError> {
    Config::from_yaml(yaml)
        .expect_err("config should be refused")
        .0
}

fn paths_of(yaml: &str) -> Vec<String> {
    errors_of(yaml).into_iter().map(|e| e.path).collect()
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = Config::from_yaml(MINIMAL).unwrap();
    assert_eq!(c.public_url.as_str(), "https://mcp.example.com");
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(c.limits.max_header_bytes, 32 * 1024);
    assert_eq!(c.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(c.limits.max_connections_per_address, 256);
    assert_eq!(c.worker_threads, 2);
    assert_eq!(c.shutdown_grace_period, Duration::from_secs(30));
    let up = &c.upstreams[0];
    assert_eq!((http(up).host.as_str(), http(up).port), ("127.0.0.1", 3001));
    assert_eq!(http(up).authority, "127.0.0.1:3001");
    assert_eq!(http(up).path, "/mcp");
    assert_eq!(up.timeouts.connect, Duration::from_secs(5));
    assert_eq!(up.timeouts.idle, None);
}

#[test]
fn unknown_field_is_an_error_naming_its_path() {
    let yaml = format!("{MINIMAL}    retries: 3\n");
    let errs = errors_of(&yaml);
    assert_eq!(errs[0].path, "upstreams[0].retries");
    assert!(
        errs[0].message.contains("unknown field `retries`"),
        "{}",
        errs[0].message
    );
}

#[test]
fn wrong_type_names_the_nested_path() {
    let yaml = format!("{MINIMAL}    timeouts:\n      connect: soon\n");
    let errs = errors_of(&yaml);
    assert_eq!(errs[0].path, "upstreams[0].timeouts.connect");
}

#[test]
fn unset_environment_variable_is_named_with_its_path() {
    let yaml = format!("{MINIMAL}    headers:\n      x-api-key: ${{MCPGW_TEST_SURELY_UNSET}}\n");
    let errs = errors_of(&yaml);
    assert_eq!(errs[0].path, "upstreams[0].headers.x-api-key");
    assert!(errs[0].message.contains("MCPGW_TEST_SURELY_UNSET"));
}

#[test]
fn set_environment_variable_becomes_an_upstream_header() {
    std::env::set_var("MCPGW_TEST_API_KEY", "k-123");
    let yaml = format!("{MINIMAL}    headers:\n      x-api-key: ${{MCPGW_TEST_API_KEY}}\n");
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.upstreams[0].headers[0].1, "k-123");
}

#[test]
fn every_validation_error_is_reported_at_once() {
    let yaml = "
public_url: ftp://x
listen: nowhere
upstreams:
  - name: Bad Name
    path: demo
    url: ws://example.com/mcp
  - name: two
    path: /b/
    url: http://127.0.0.1:1/mcp
    headers:
      host: evil
";
    let paths = paths_of(yaml);
    for expected in [
        "public_url",
        "listen",
        "upstreams[0].name",
        "upstreams[0].path",
        "upstreams[0].url",
        "upstreams[1].path",
        "upstreams[1].headers.host",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "missing {expected} in {paths:?}"
        );
    }
    let text = ConfigErrors(errors_of(yaml)).to_string();
    assert!(text.contains("hint:"), "{text}");
}

#[test]
fn nested_or_duplicate_paths_and_names_are_refused() {
    let yaml = "
public_url: http://127.0.0.1:8080
upstreams:
  - { name: a, path: /a, url: 'http://127.0.0.1:1' }
  - { name: a, path: /a/b, url: 'http://127.0.0.1:2' }
";
    let paths = paths_of(yaml);
    assert!(paths.contains(&"upstreams[1].name".to_owned()), "{paths:?}");
    assert!(paths.contains(&"upstreams[1].path".to_owned()), "{paths:?}");
}

#[test]
fn well_known_paths_are_reserved() {
    let yaml = MINIMAL.replace("/demo/mcp", "/.well-known/mcp");
    assert_eq!(paths_of(&yaml), vec!["upstreams[0].path"]);
}

#[test]
fn empty_upstream_list_is_refused() {
    assert_eq!(
        paths_of("public_url: http://a\nauth: { disabled: true }\nupstreams: []\n"),
        vec!["upstreams"]
    );
}

#[test]
fn origins_are_normalised_like_browsers_send_them() {
    let yaml = format!(
        "{MINIMAL}allowed_origins: ['HTTPS://App.Example.com:443', 'http://localhost:6274']\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(
        c.allowed_origins,
        vec!["https://app.example.com", "http://localhost:6274"]
    );
    assert_eq!(
        paths_of(&format!(
            "{MINIMAL}allowed_origins: ['https://a.com/path']\n"
        )),
        vec!["allowed_origins[0]"]
    );
}

#[test]
fn invalid_yaml_is_reported_with_its_location() {
    let errs = errors_of("public_url: [unclosed\n");
    assert!(errs[0].message.contains("line"), "{}", errs[0].message);
}

#[test]
fn duplicate_yaml_keys_are_refused() {
    let yaml = format!("{MINIMAL}public_url: http://other\n");
    assert!(Config::from_yaml(&yaml).is_err());
}

const PROTECTED: &str = "
public_url: https://mcp.example.com
auth:
  jwt_issuers:
    - issuer: https://idp.example.com
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://127.0.0.1:3001/mcp
";

#[test]
fn missing_auth_section_is_refused_with_a_hint() {
    let yaml = MINIMAL.replace("auth: { disabled: true }\n", "");
    let errs = errors_of(&yaml);
    assert_eq!(errs[0].path, "auth");
    assert!(errs[0].hint.contains("disabled: true"), "{}", errs[0].hint);
}

#[test]
fn jwt_issuer_defaults_to_asymmetric_algorithms_and_is_published() {
    let c = Config::from_yaml(PROTECTED).unwrap();
    let auth = c.auth.unwrap();
    assert_eq!(auth.authorization_servers, vec!["https://idp.example.com"]);
    let algs = &auth.jwt_issuers[0].algorithms;
    assert!(algs.contains(&jsonwebtoken::Algorithm::ES256));
    assert!(!algs.contains(&jsonwebtoken::Algorithm::HS256));
    assert_eq!(c.upstreams[0].resource, "https://mcp.example.com/demo/mcp");
}

#[test]
fn access_token_types_default_to_at_jwt_and_jwt_and_can_be_narrowed() {
    let c = Config::from_yaml(PROTECTED).unwrap();
    assert_eq!(
        c.auth.unwrap().jwt_issuers[0].token_types,
        ["at+jwt", "JWT"]
    );
    let narrowed = PROTECTED.replace(
        "    - issuer: https://idp.example.com\n",
        "    - issuer: https://idp.example.com\n      token_types: [at+jwt]\n",
    );
    let c = Config::from_yaml(&narrowed).unwrap();
    assert_eq!(c.auth.unwrap().jwt_issuers[0].token_types, ["at+jwt"]);
    let empty = PROTECTED.replace(
        "    - issuer: https://idp.example.com\n",
        "    - issuer: https://idp.example.com\n      token_types: []\n",
    );
    assert_eq!(paths_of(&empty), vec!["auth.jwt_issuers[0].token_types"]);
}

#[test]
fn none_and_unkeyed_hmac_algorithms_and_plain_http_issuers_are_refused() {
    let yaml = PROTECTED.replace(
        "    - issuer: https://idp.example.com\n",
        "    - issuer: http://idp.example.com\n      algorithms: [none, HS256, ES256]\n",
    );
    let paths = paths_of(&yaml);
    for expected in [
        "auth.jwt_issuers[0].issuer",
        "auth.jwt_issuers[0].algorithms[0]",
        "auth.jwt_issuers[0].algorithms[1]",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "missing {expected} in {paths:?}"
        );
    }
}

#[test]
fn policy_scopes_must_be_declared_when_a_scope_list_is_given() {
    let yaml = format!(
        "{PROTECTED}    scopes: [mcp, math]\n    policy:\n      base_scopes: [mcp]\n      tools:\n        add: [maths]\n"
    );
    assert_eq!(paths_of(&yaml), vec!["upstreams[0].policy.tools.add"]);
}

#[test]
fn unreachable_rules_and_unknown_methods_are_warnings() {
    let yaml = format!(
        "{PROTECTED}    policy:\n      unlisted_tools: base\n      methods:\n        resource/read: [files]\n      tools:\n        'a*': [x]\n        'a**': [y]\n        'a?*': [y]\n        '*': [z]\n"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let paths: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "upstreams[0].policy.methods.resource/read",
            "upstreams[0].policy.tools.a**",
            "upstreams[0].policy.tools.a?*",
            "upstreams[0].policy.unlisted_tools",
        ]
    );
    assert_eq!(c.upstreams[0].policy.scopes, vec!["files", "z", "x", "y"]);
}

#[test]
fn an_extra_audience_may_not_open_another_upstream_and_leeway_is_bounded() {
    let yaml = format!(
        "{PROTECTED}    audiences: ['https://mcp.example.com/b/mcp']\n  - {{ name: b, path: /b/mcp, url: 'http://127.0.0.1:3002/mcp' }}\n"
    )
    .replace("    - issuer: https://idp.example.com\n", "    - issuer: https://idp.example.com\n      leeway: 10m\n");
    assert_eq!(
        paths_of(&yaml),
        vec!["auth.jwt_issuers[0].leeway", "upstreams[0].audiences[0]"]
    );
}

#[test]
fn several_introspection_endpoints_without_prefixes_are_a_warning() {
    let yaml = PROTECTED.replace(
        "upstreams:",
        "  introspection:
    - { url: 'https://a.example/introspect', client_id: g, client_secret: s, token_prefix: 'a_' }
    - { url: 'https://b.example/introspect', client_id: g, client_secret: s }
upstreams:",
    );
    let c = Config::from_yaml(&yaml).unwrap();
    assert_eq!(c.warnings[0].path, "auth.introspection");
}

#[test]
fn the_authorization_server_needs_https_or_loopback_and_no_path() {
    let with = |url: &str| {
        format!("public_url: {url}\nauthorization_server: {{ users: [] }}\nupstreams:\n  - {{ name: a, path: /a, url: 'http://127.0.0.1:1' }}\n")
    };
    assert!(Config::from_yaml(&with("https://mcp.example.com")).is_ok());
    assert!(Config::from_yaml(&with("http://127.0.0.1:8080")).is_ok());
    assert_eq!(
        paths_of(&with("http://mcp.example.com")),
        vec!["public_url"]
    );
    assert_eq!(
        paths_of(&with("https://mcp.example.com/base")),
        vec!["public_url"]
    );
}

// Issue 11.7: one run reports every unknown key and bad value, each with
// its YAML path and, for a typo, the key meant.
#[test]
fn every_structural_error_is_reported_at_once_with_did_you_mean() {
    let yaml = "public_url: http://127.0.0.1:8080
lisen: 127.0.0.1:8080
auth: { disabled: true }
server: { worker_threads: 2, shutdown_grace_period: soon }
upstreams:
  - name: a
    path: /a/mcp
    url: http://127.0.0.1:3001/mcp
    tiemouts: { connect: 1s }
  - name: b
    path: /b/mcp
    url: http://127.0.0.1:3002/mcp
    timeouts: { response: 5 parsecs }
";
    let errs = errors_of(yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "lisen",
            "upstreams[0].tiemouts",
            "upstreams[1].timeouts.response",
            "server.shutdown_grace_period",
        ],
        "{errs:?}"
    );
    assert_eq!(errs[0].hint, "did you mean `listen`?");
    assert_eq!(errs[1].hint, "did you mean `timeouts`?");
}

/// An upstream at `url` with `tls` (YAML mapping text, or nothing).
fn upstream_at(url: &str, tls: &str) -> String {
    format!(
        "public_url: https://mcp.example.com/
auth: {{ disabled: true }}
upstreams:
  - name: remote
    path: /remote/mcp
    url: {url}
{tls}"
    )
}

#[test]
fn an_https_upstream_is_verified_against_its_host_by_default() {
    let c = Config::from_yaml(&upstream_at("https://mcp.example.org/mcp", "")).unwrap();
    let up = &c.upstreams[0];
    assert_eq!(http(up).port, 443);
    assert_eq!(http(up).authority, "mcp.example.org");
    let tls = up.tls.as_ref().expect("https means TLS");
    assert_eq!(tls.server_name, "mcp.example.org");
    assert!(tls.verify && tls.http2);
    assert!(tls.ca_file.is_none() && tls.client_cert.is_none());
    let plain = Config::from_yaml(MINIMAL).unwrap();
    assert!(plain.upstreams[0].tls.is_none());
}

#[test]
fn tls_settings_are_refused_where_they_cannot_apply() {
    let on_http = upstream_at(
        "http://127.0.0.1:3001/mcp",
        "    tls: { server_name: x.example }\n",
    );
    assert_eq!(paths_of(&on_http), vec!["upstreams[0].tls"]);
    let half_cert = upstream_at(
        "https://mcp.example.org/mcp",
        "    tls: { client_cert_file: /etc/c.pem }\n",
    );
    assert_eq!(paths_of(&half_cert), vec!["upstreams[0].tls"]);
    let bad_name = upstream_at(
        "https://10.0.0.5/mcp",
        "    tls: { server_name: 'not a name' }\n",
    );
    assert_eq!(paths_of(&bad_name), vec!["upstreams[0].tls.server_name"]);
    let other_scheme = upstream_at("ftp://mcp.example.org/mcp", "");
    assert_eq!(paths_of(&other_scheme), vec!["upstreams[0].url"]);
}

#[test]
fn skipping_verification_is_a_warning() {
    let c = Config::from_yaml(&upstream_at(
        "https://10.0.0.5/mcp",
        "    tls: { insecure_skip_verify: true }\n",
    ))
    .unwrap();
    assert!(!c.upstreams[0].tls.as_ref().unwrap().verify);
    assert_eq!(c.warnings[0].path, "upstreams[0].tls.insecure_skip_verify");
}

#[test]
fn unreadable_tls_files_are_errors_naming_their_setting() {
    let dir = std::env::temp_dir().join(format!("mcpgw-tls-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("not-a-cert.pem"), "hello").unwrap();
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        upstream_at(
            "https://mcp.example.org/mcp",
            "    tls: { ca_file: not-a-cert.pem, client_cert_file: missing.pem, client_key_file: missing.key }\n",
        ),
    )
    .unwrap();
    let errors = Config::load(&file).expect_err("bad files").0;
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["upstreams[0].tls.ca_file"], "{errors:?}");
    assert!(
        errors[0].message.contains("not-a-cert.pem"),
        "relative to the config file, named: {}",
        errors[0].message
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const WITH_JWT: &str = "
public_url: https://mcp.example.com/
auth: { jwt_issuers: [{ issuer: 'https://idp.example.com' }] }
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://127.0.0.1:3001/mcp
";

#[test]
fn rate_limits_compile_with_tool_rules_in_matching_order() {
    let yaml = format!(
        "{WITH_JWT}    rate_limits:
      per_subject: 10/s
      per_client: {{ rate: 600/min, burst: 50 }}
      per_tool: {{ 'get-*': 5/s, get-sum: 1/s, '*': 100/h }}
limits:
  unauthenticated_per_address: {{ rate: 20/s, burst: 40 }}
"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let limits = &c.upstreams[0].rate_limits;
    let sec = Duration::from_secs(1);
    assert_eq!(limits.per_subject, Some(Rate::new(10, sec, 10)));
    assert_eq!(limits.per_client, Some(Rate::new(600, 60 * sec, 50)));
    let order: Vec<&str> = limits.per_tool.iter().map(|(g, _)| g.as_str()).collect();
    assert_eq!(
        order,
        ["get-sum", "get-*", "*"],
        "exact names first, then by specificity"
    );
    assert_eq!(
        c.limits.unauthenticated_per_address,
        Some(Rate::new(20, sec, 40))
    );
    let summary = c.summary();
    assert!(
        summary.contains("rate limit per subject: 10/s, burst 10"),
        "{summary}"
    );
    assert!(summary.contains("per address: 20/s, burst 40"), "{summary}");
}

#[test]
fn malformed_rates_are_errors_at_their_path() {
    let yaml = format!(
        "{WITH_JWT}    rate_limits:
      per_subject: lots
      per_client: {{ rate: 10/s, burst: 0 }}
      per_tool: {{ add: {{ rate: 1/s, brust: 2 }}, '': 1/s }}
limits: {{ unauthenticated_per_address: 5/fortnight }}
"
    );
    let errs = errors_of(&yaml);
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for path in [
        "upstreams[0].rate_limits.per_subject",
        "upstreams[0].rate_limits.per_client",
        "upstreams[0].rate_limits.per_tool.add",
        "limits.unauthenticated_per_address",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|e| e.contains("`lots` is not a rate")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|e| e.contains("unknown unit `fortnight`")),
        "{text:?}"
    );
}

#[test]
fn rate_limits_without_authentication_are_an_error() {
    let yaml = format!("{MINIMAL}    rate_limits: {{ per_subject: 10/s }}\n");
    assert_eq!(paths_of(&yaml), ["upstreams[0].rate_limits"]);
    // The per-address limit needs no token.
    let yaml = format!("{MINIMAL}limits: {{ unauthenticated_per_address: 10/s }}\n");
    Config::from_yaml(&yaml).unwrap();
}

#[test]
fn forwarded_identity_compiles_with_defaults_and_is_summarised() {
    let yaml = format!(
        "{WITH_JWT}    forward_identity:
      headers: {{ subject: X-Auth-Subject, groups: x-auth-groups }}
      jwt: {{}}
"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let identity = c.upstreams[0].identity.as_ref().unwrap();
    let names: Vec<&str> = identity.header_names().map(|n| n.as_str()).collect();
    assert_eq!(
        names,
        ["x-auth-subject", "x-auth-groups", "x-gateway-identity"]
    );
    let jwt = identity.jwt.as_ref().unwrap();
    assert_eq!(
        jwt.audience, "http://127.0.0.1:3001/mcp",
        "the upstream's URL"
    );
    assert_eq!(jwt.ttl, Duration::from_secs(60));
    let summary = c.summary();
    assert!(
        summary.contains("caller identity in: x-auth-subject, x-auth-groups, x-gateway-identity"),
        "{summary}"
    );
    assert!(
        summary.contains("identity JWT key: generated at start"),
        "{summary}"
    );
}

#[test]
fn identity_headers_that_could_be_confused_with_credentials_are_refused() {
    let yaml = format!(
        "{WITH_JWT}    headers: {{ X-Tenant: acme }}
    forward_identity:
      headers:
        subject: authorization
        issuer: cookie
        client_id: mcp-session-id
        scopes: x-tenant
        email: 'bad header'
        groups: x-auth
      jwt: {{ header: X-Auth, ttl: 2h, audience: '' }}
"
    );
    let errs = errors_of(&yaml);
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for (path, says) in [
        (
            "upstreams[0].forward_identity.headers.subject",
            "only the identity JWT may go in `authorization`",
        ),
        (
            "upstreams[0].forward_identity.headers.issuer",
            "`cookie` is a header the gateway or the transport owns",
        ),
        (
            "upstreams[0].forward_identity.headers.client_id",
            "`mcp-session-id` is a header the gateway or the transport owns",
        ),
        (
            "upstreams[0].forward_identity.headers.scopes",
            "`x-tenant` is also one of this upstream's `headers`",
        ),
        (
            "upstreams[0].forward_identity.headers.email",
            "`bad header` is not a header name",
        ),
        (
            "upstreams[0].forward_identity.jwt.header",
            "`x-auth` carries another identity field already",
        ),
    ] {
        assert!(
            text.iter().any(|t| t.contains(path) && t.contains(says)),
            "{path}: {says} missing from {text:#?}"
        );
    }
}

#[test]
fn identity_jwt_lifetime_and_audience_are_checked() {
    let yaml = format!(
        "{WITH_JWT}    forward_identity: {{ jwt: {{ header: authorization, ttl: 2h, audience: ' ' }} }}\n"
    );
    let mut paths = paths_of(&yaml);
    paths.sort();
    assert_eq!(
        paths,
        [
            "upstreams[0].forward_identity.jwt.audience",
            "upstreams[0].forward_identity.jwt.ttl"
        ]
    );
    let yaml = format!("{WITH_JWT}    forward_identity: {{ jwt: {{ header: authorization }} }}\n");
    Config::from_yaml(&yaml).expect("the JWT may replace Authorization");
}

#[test]
fn identity_without_authentication_or_with_an_unknown_field_is_an_error() {
    let yaml = format!("{MINIMAL}    forward_identity: {{ headers: {{ subject: x-sub }} }}\n");
    assert_eq!(paths_of(&yaml), ["upstreams[0].forward_identity"]);
    let yaml = format!("{WITH_JWT}    forward_identity: {{ headers: {{ phone: x-phone }} }}\n");
    let errs = errors_of(&yaml);
    assert!(
        errs[0].to_string().contains("phone"),
        "the unknown field is named: {}",
        errs[0]
    );
}

#[test]
fn an_unusable_identity_key_file_is_named() {
    let dir = std::env::temp_dir().join(format!("mcpgw-identity-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("identity.pem"), "not a key").unwrap();
    let file = dir.join("gateway.yaml");
    std::fs::write(
        &file,
        format!(
            "{WITH_JWT}    forward_identity: {{ jwt: {{}} }}\nidentity_key_file: identity.pem\n"
        ),
    )
    .unwrap();
    let errors = Config::load(&file).expect_err("bad key").0;
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["identity_key_file"], "{errors:?}");
    assert!(
        errors[0].message.contains("identity.pem"),
        "{}",
        errors[0].message
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tls_listener_needs_an_https_public_url_and_usable_files() {
    let dir = std::env::temp_dir().join(format!("mcpgw-listen-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let file = dir.join("gateway.yaml");
    let yaml = |public_url: &str, tls: &str| {
        MINIMAL.replace("https://mcp.example.com/", public_url) + &format!("tls: {tls}\n")
    };
    std::fs::write(
        &file,
        yaml(
            "https://mcp.example.com",
            "{ cert_file: cert.pem, key_file: key.pem }",
        ),
    )
    .unwrap();
    let errors = Config::load(&file).expect_err("bad files").0;
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["tls.cert_file"], "{errors:?}");
    assert!(
        errors[0].message.contains("cert.pem"),
        "{}",
        errors[0].message
    );
    let errs = errors_of(&yaml(
        "http://mcp.example.com",
        "{ cert_file: a, key_file: b }",
    ));
    assert_eq!(errs[0].path, "public_url");
    assert!(errs[0].message.contains("serves HTTPS"), "{}", errs[0]);
    let errs = errors_of(&yaml(
        "https://mcp.example.com",
        "{ cert_file: a, key_file: b, http3: true }",
    ));
    assert!(errs[0].to_string().contains("http3"), "{}", errs[0]);
    let c = Config::from_yaml(&yaml(
        "https://mcp.example.com",
        "{ cert_file: a, key_file: b }",
    ))
    .unwrap();
    assert!(c.listen_tls.as_ref().unwrap().http2, "h2 on by default");
    assert!(c
        .summary()
        .contains("listener TLS: a + b (TLS 1.2/1.3, h2 and http/1.1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

const WITH_AS: &str = "
public_url: https://mcp.example.com
auth: { jwt_issuers: [] }
upstreams:
  - { name: demo, path: /demo/mcp, url: 'http://127.0.0.1:3001/mcp', scopes: [mcp], policy: { base_scopes: [mcp] } }
authorization_server:
";

#[test]
fn identity_provider_presets_fill_in_what_operators_leave_out() {
    let yaml = format!(
        "{WITH_AS}  identity_providers:
    - {{ id: g, type: google, client_id: a, client_secret: b }}
    - {{ id: ms, type: microsoft, tenant: organizations, client_id: a, client_secret: b }}
    - {{ id: contoso, type: microsoft, tenant: 72f988bf-86f1-41af-91ab-2d7cd011db47, client_id: a, client_secret: b }}
    - {{ id: kc, type: keycloak, issuer: 'https://sso.example.com/realms/corp', client_id: a, client_secret: b, scopes: [openid, email, groups] }}
  access:
    - {{ when: {{ email_domain: example.com, email_verified: true }}, scopes: [mcp] }}
"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let idps = &c.authorization_server.as_ref().unwrap().identity_providers;
    assert_eq!(idps[0].issuer, "https://accounts.google.com");
    assert_eq!(idps[0].display_name, "Google");
    assert_eq!(idps[0].scopes, ["openid", "email", "profile"]);
    assert_eq!(
        idps[1].issuer,
        "https://login.microsoftonline.com/{tenantid}/v2.0"
    );
    assert_eq!(
        idps[1].discovery_url,
        "https://login.microsoftonline.com/organizations/v2.0/.well-known/openid-configuration"
    );
    assert_eq!(
        idps[2].issuer,
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
    );
    assert_eq!(
        idps[3].discovery_url,
        "https://sso.example.com/realms/corp/.well-known/openid-configuration"
    );
    assert_eq!(idps[3].display_name, "Keycloak");
    let summary = c.summary();
    assert!(
        summary.contains("sign in with Keycloak (kc): issuer https://sso.example.com/realms/corp, callback https://mcp.example.com/callback/kc"),
        "{summary}"
    );
}

#[test]
fn identity_provider_mistakes_are_explained_at_their_path() {
    let yaml = format!(
        "{WITH_AS}  identity_providers:
    - {{ id: Corp, type: oidc, client_id: a, client_secret: b, scopes: [email] }}
    - {{ id: gh, type: github, client_id: a, client_secret: b, api_url: 'http://api.example.com' }}
    - {{ id: ms, type: microsoft, client_id: a, client_secret: b }}
    - {{ id: plain, type: okta, issuer: 'http://okta.example.com', client_id: a, client_secret: '' }}
  access:
    - {{ when: {{ idp: nobody, email_domain: example.com }}, scopes: [] }}
"
    );
    let errs = errors_of(&yaml);
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for (path, says) in [
        ("identity_providers[0].id", "not a valid id"),
        ("identity_providers[0].issuer", "missing"),
        ("identity_providers[1].api_url", "https"),
        ("identity_providers[2].tenant", "needs the directory"),
        ("identity_providers[3].issuer", "https"),
        ("identity_providers[3].client_secret", "required"),
        (
            "access[0].when.idp",
            "`nobody` is not one of identity_providers",
        ),
        (
            "access[0].when.email_verified",
            "admits anyone who can type",
        ),
        ("access[0].scopes", "empty"),
    ] {
        assert!(
            text.iter().any(|t| t.contains(path) && t.contains(says)),
            "{path}: {says} missing from {text:#?}"
        );
    }
}

#[test]
fn a_provider_no_rule_admits_and_rules_without_providers_are_errors() {
    let yaml = format!(
        "{WITH_AS}  identity_providers:
    - {{ id: corp, type: oidc, issuer: 'https://idp.example.com', client_id: a, client_secret: b, scopes: [email] }}
  access:
    - {{ when: {{ idp: other }}, scopes: [mcp] }}
"
    );
    let text: Vec<String> = errors_of(&yaml).iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("`openid` is missing")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("no rule admits anyone signing in with `corp`")),
        "{text:#?}"
    );
    let yaml = format!("{WITH_AS}  access:\n    - {{ when: {{}}, scopes: [mcp] }}\n");
    let text: Vec<String> = errors_of(&yaml).iter().map(ToString::to_string).collect();
    assert!(text.iter().any(|t| t.contains("admit no one")), "{text:#?}");
}

#[test]
fn a_local_user_cannot_take_a_federated_subject() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$UBHCNCIK5m5tn0MaguLf1g$GHSDuyM3LuUbrY6Qpc3RgMpSmYYfxns8bAPuutXO5TQ";
    let yaml = format!("{WITH_AS}  users: [{{ username: 'corp|alice', password_hash: '{hash}', scopes: [mcp] }}]\n");
    let errs = errors_of(&yaml);
    assert_eq!(
        errs[0].path, "authorization_server.users[0].username",
        "{errs:?}"
    );
}

#[test]
fn rules_must_pin_open_providers_to_an_organisation() {
    let yaml = format!(
        "{WITH_AS}  identity_providers:
    - {{ id: g, type: google, client_id: a, client_secret: b }}
    - {{ id: ms, type: microsoft, tenant: organizations, client_id: a, client_secret: b }}
    - {{ id: dom, type: microsoft, tenant: contoso.com, client_id: a, client_secret: b }}
  access:
    - {{ when: {{ idp: g }}, scopes: [mcp] }}
    - {{ when: {{ idp: ms, claim: {{ roles: admin }} }}, scopes: [mcp] }}
    - {{ when: {{ idp: g, claim: {{ email: boss@example.com }} }}, scopes: [mcp] }}
    - {{ when: {{ idp: ms, claim: {{ tid: 72f988bf-86f1-41af-91ab-2d7cd011db47 }} }}, scopes: [mcp] }}
"
    );
    let text: Vec<String> = errors_of(&yaml).iter().map(ToString::to_string).collect();
    for (path, says) in [
        ("access[0].when", "admits anyone with an account at `g`"),
        ("access[1].when", "admits anyone with an account at `ms`"),
        (
            "access[2].when.email_verified",
            "trusts an address nobody checked",
        ),
        ("identity_providers[2].tenant", "not a tenant id"),
    ] {
        assert!(
            text.iter().any(|t| t.contains(path) && t.contains(says)),
            "{path}: {says} missing from {text:#?}"
        );
    }
    assert!(
        !text.iter().any(|t| t.contains("access[3]")),
        "a tid-pinned rule is fine: {text:#?}"
    );
}

#[test]
fn branding_is_checked_where_it_is_read() {
    let dir = std::env::temp_dir().join(format!("mcpgw-branding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("logo.gif"), "GIF89a").unwrap();
    std::fs::write(dir.join("big.png"), vec![0u8; 70 * 1024]).unwrap();
    std::fs::write(
        dir.join("ok.svg"),
        "<svg xmlns='http://www.w3.org/2000/svg'/>",
    )
    .unwrap();
    let file = dir.join("gateway.yaml");
    for (logo, fails) in [("logo.gif", true), ("big.png", true), ("ok.svg", false)] {
        std::fs::write(
            &file,
            format!("{WITH_AS}  branding: {{ product_name: Acme, logo_file: {logo} }}\n"),
        )
        .unwrap();
        let loaded = Config::load(&file);
        assert_eq!(loaded.is_err(), fails, "{logo}: {loaded:?}");
        if let Err(e) = loaded {
            assert_eq!(e.0[0].path, "authorization_server.branding.logo_file");
        }
    }
    let long = "x".repeat(65);
    let errs = errors_of(&format!(
        "{WITH_AS}  branding: {{ product_name: {long} }}\n"
    ));
    assert_eq!(errs[0].path, "authorization_server.branding.product_name");
    assert!(crate::config::logo_data_url(&dir.join("ok.svg"))
        .unwrap()
        .starts_with("data:image/svg+xml;base64,"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_github_preset_and_its_rules() {
    let yaml = format!(
        "{WITH_AS}  identity_providers:
    - {{ id: gh, type: github, client_id: a, client_secret: b }}
    - {{ id: ghe, type: github, issuer: 'https://git.example.com', client_id: a, client_secret: b }}
  access:
    - {{ when: {{ idp: gh, org: Example-Org }}, scopes: [mcp] }}
    - {{ when: {{ idp: ghe, team: Corp/Admins }}, scopes: [mcp] }}
"
    );
    let c = Config::from_yaml(&yaml).unwrap();
    let a = c.authorization_server.as_ref().unwrap();
    let idps = &a.identity_providers;
    assert_eq!(idps[0].issuer, "https://github.com");
    assert_eq!(idps[0].discovery_url, "https://api.github.com", "the API");
    assert_eq!(idps[0].scopes, ["read:user", "user:email", "read:org"]);
    assert_eq!(idps[1].discovery_url, "https://git.example.com/api/v3");
    assert_eq!(
        a.access[0].claims,
        [("orgs".to_owned(), "example-org".to_owned())]
    );
    assert_eq!(
        a.access[1].claims,
        [("teams".to_owned(), "corp/admins".to_owned())]
    );
    let open = format!(
        "{WITH_AS}  identity_providers:\n    - {{ id: gh, type: github, client_id: a, client_secret: b }}\n  access:\n    - {{ when: {{ idp: gh }}, scopes: [mcp] }}\n"
    );
    let text: Vec<String> = errors_of(&open).iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("admits anyone with an account at `gh`")),
        "{text:#?}"
    );
}

/// The HTTP target of an upstream that has one.
fn http(up: &super::Upstream) -> &super::UpstreamTarget {
    match &up.target {
        super::Target::Http(t) => t,
        super::Target::Stdio(c) => panic!("a stdio upstream: {c:?}"),
    }
}

/// `authorization_server.store`: SQLite unless a PostgreSQL URL is given;
/// anything else, an empty pool or a zero timeout is refused by path.
#[test]
fn the_store_is_sqlite_unless_a_postgres_url_is_given() {
    let with = |store: &str| {
        format!("public_url: https://gw.example\nauthorization_server: {{ users: [] {store} }}\nupstreams:\n  - {{ name: a, path: /a, url: 'http://127.0.0.1:1' }}\n")
    };
    let store = |yaml: &str| {
        Config::from_yaml(yaml)
            .unwrap()
            .authorization_server
            .unwrap()
            .store
    };
    assert_eq!(store(&with("")), StoreConfig::Sqlite);
    let StoreConfig::Postgres(pg) = store(&with(
        ", store: { url: 'postgresql://gw:pw@db:5432/gw?sslmode=require', pool_size: 3 }",
    )) else {
        panic!("a PostgreSQL store");
    };
    assert_eq!(pg.pool_size, 3);
    assert_eq!(pg.statement_timeout, Duration::from_secs(5));
    assert_eq!(pg.max_staleness, Duration::from_secs(30));
    assert!(!format!("{pg:?}").contains("pw@"), "the URL is secret");
    assert_eq!(
        paths_of(&with(
            ", store: { url: 'mysql://db/gw', pool_size: 0, statement_timeout: 0s, max_staleness: 0s }"
        )),
        [
            "authorization_server.store.url",
            "authorization_server.store.pool_size",
            "authorization_server.store.statement_timeout",
            "authorization_server.store.max_staleness"
        ]
    );
}

/// The health checks' paths belong to the gateway.
#[test]
fn health_check_paths_are_reserved() {
    let yaml = MINIMAL.replace("path: /demo/mcp", "path: /readyz");
    assert!(errors_of(&yaml)[0].message.contains("health checks"));
}

#[test]
fn a_session_secret_must_be_long_enough_to_be_a_key() {
    let with = |secret: &str| {
        PROTECTED.replace(
            "auth:\n",
            &format!("auth:\n  sessions: {{ secret: '{secret}' }}\n"),
        )
    };
    assert_eq!(paths_of(&with("short")), vec!["auth.sessions.secret"]);
    let c = Config::from_yaml(&with(&"k".repeat(32))).unwrap();
    assert!(c.auth.unwrap().session_secret.is_some());
}

#[test]
fn the_refresh_reuse_grace_is_off_by_default_and_at_most_a_minute() {
    let yaml = |grace: &str| {
        format!("public_url: http://127.0.0.1:1\nauthorization_server: {{ users: []{grace} }}\nupstreams:\n  - {{ name: a, path: /a, url: 'http://127.0.0.1:1' }}\n")
    };
    let grace_of = |y: &str| {
        Config::from_yaml(y)
            .unwrap()
            .authorization_server
            .unwrap()
            .refresh_reuse_grace
    };
    assert_eq!(grace_of(&yaml("")), Duration::ZERO);
    assert_eq!(
        grace_of(&yaml(", refresh_reuse_grace: 5s")),
        Duration::from_secs(5)
    );
    assert_eq!(
        paths_of(&yaml(", refresh_reuse_grace: 2m")),
        vec!["authorization_server.refresh_reuse_grace"]
    );
}
