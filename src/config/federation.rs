//! `authorization_server.identity_providers` and `.access`: the identity
//! providers people sign in with (the built-in server is their relying
//! party) and the rules deciding who is admitted with which scopes.

use super::auth::{check_endpoint_url, Secret};
use super::raw::{ProviderKind, RawAccessRule, RawAuthServer, RawIdentityProvider};
use super::ConfigError;
use std::collections::BTreeSet;

/// One identity provider, with its preset's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityProvider {
    /// Its name in subjects (`<id>|<sub>`), URLs (`/callback/<id>`), logs.
    pub id: String,
    pub kind: ProviderKind,
    /// The `iss` its ID tokens carry; for Entra ID's multi-tenant
    /// endpoints a template with `{tenantid}`, filled from the `tid` claim.
    pub issuer: String,
    /// Where its OpenID Connect metadata is (GitHub: its REST API).
    pub discovery_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Scopes asked of it (always with `openid`).
    pub scopes: Vec<String>,
    /// The button's label on the login page.
    pub display_name: String,
}

/// A rule of `access`: whom it matches and the scopes they may grant.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRule {
    /// Only people of this provider.
    pub idp: Option<String>,
    /// Only emails at this domain (case-insensitive, exact).
    pub email_domain: Option<String>,
    /// Only when `email_verified` is this.
    pub email_verified: Option<bool>,
    /// Only when each claim is this string, or a list holding it.
    pub claims: Vec<(String, String)>,
    /// What a matching person may grant (the union over matching rules).
    pub scopes: BTreeSet<String>,
}

/// Entra ID directories that stand for many tenants.
const MULTI_TENANT: &[&str] = &["common", "organizations", "consumers"];

/// Validates the providers and rules of `raw` (at `at`).
pub(super) fn validate_federation(
    raw: &RawAuthServer,
    at: &str,
    errors: &mut Vec<ConfigError>,
) -> (Vec<IdentityProvider>, Vec<AccessRule>) {
    let mut ids = BTreeSet::new();
    let providers: Vec<IdentityProvider> = raw
        .identity_providers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let path = format!("{at}.identity_providers[{i}]");
            let valid_id = !p.id.is_empty()
                && p.id.len() <= 32
                && p.id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            if !valid_id || !ids.insert(p.id.as_str()) {
                errors.push(ConfigError::new(
                    &format!("{path}.id"),
                    format!("`{}` is not a valid id, or is used twice", p.id),
                    "use 1-32 of a-z, 0-9, - and _, unique (it appears in subjects and the callback URL)",
                ));
            }
            provider(p, &path, errors)
        })
        .collect();
    let rules = raw
        .access
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, &format!("{at}.access[{i}]"), &ids, errors))
        .collect::<Vec<_>>();
    for p in &providers {
        // Anyone can have a Google, GitHub or Microsoft account: a rule
        // must say which organisation's.
        let open = matches!(p.kind, ProviderKind::Google | ProviderKind::Github)
            || p.issuer.contains("{tenantid}");
        let pins: &[&str] = match p.kind {
            ProviderKind::Google => &["hd"],
            ProviderKind::Github => &["orgs", "teams"],
            _ => &["tid"],
        };
        let pin = pins[0];
        for (i, r) in rules.iter().enumerate() {
            let applies = r.idp.as_ref().is_none_or(|id| *id == p.id);
            let pinned = r.email_domain.is_some()
                || r.claims.iter().any(|(k, _)| pins.contains(&k.as_str()));
            if open && applies && !pinned {
                errors.push(ConfigError::new(
                    &format!("{at}.access[{i}].when"),
                    format!("this rule admits anyone with an account at `{}`", p.id),
                    format!("restrict it to your organisation: `email_domain` (with `email_verified: true`) or `claim: {{ {pin}: ... }}` (GitHub: `org` or `team`)"),
                ));
            }
        }
        if !rules
            .iter()
            .any(|r| r.idp.as_ref().is_none_or(|i| *i == p.id))
        {
            errors.push(ConfigError::new(
                &format!("{at}.access"),
                format!("no rule admits anyone signing in with `{}`", p.id),
                "add a rule, e.g. `- when: { idp: corp, email_domain: example.com, email_verified: true }` with the scopes they may grant",
            ));
        }
    }
    if providers.is_empty() && !rules.is_empty() {
        errors.push(ConfigError::new(
            &format!("{at}.access"),
            "rules without identity_providers admit no one (local users have their own scopes)",
            "add identity_providers, or remove access",
        ));
    }
    (providers, rules)
}

/// One provider with its preset applied.
fn provider(
    p: &RawIdentityProvider,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<IdentityProvider> {
    let mut err = |field: &str, message: String, hint: &str| {
        errors.push(ConfigError::new(&format!("{path}.{field}"), message, hint));
    };
    let (issuer, discovery_url, display) = match p.kind {
        ProviderKind::Github => {
            let web = p
                .issuer
                .clone()
                .unwrap_or_else(|| "https://github.com".to_owned());
            let api = p.api_url.clone().unwrap_or_else(|| {
                if web == "https://github.com" {
                    "https://api.github.com".to_owned()
                } else {
                    format!("{}/api/v3", web.trim_end_matches('/'))
                }
            });
            if let Err(e) = check_endpoint_url(&api) {
                err(
                    "api_url",
                    e,
                    "use https (plain http only on a loopback address)",
                );
            }
            (web.trim_end_matches('/').to_owned(), Some(api), "GitHub")
        }
        ProviderKind::Google => {
            let google = "https://accounts.google.com";
            if p.issuer.as_deref().is_some_and(|i| i != google) {
                err(
                    "issuer",
                    "Google's issuer is fixed".into(),
                    "leave `issuer` out for `type: google`",
                );
            }
            (google.to_owned(), None, "Google")
        }
        ProviderKind::Microsoft => {
            let Some(tenant) = p
                .tenant
                .as_deref()
                .filter(|t| !t.is_empty() && !t.contains('/'))
            else {
                err(
                    "tenant",
                    "Entra ID needs the directory to sign in to".into(),
                    "set `tenant` to the tenant id or domain, or `organizations` for any work account",
                );
                return None;
            };
            if !MULTI_TENANT.contains(&tenant) && !is_guid(tenant) {
                err(
                    "tenant",
                    format!("`{tenant}` is not a tenant id"),
                    "use the directory's tenant id (a GUID: Entra's issuer names it, not the domain), or `organizations`",
                );
                return None;
            }
            let base = format!("https://login.microsoftonline.com/{tenant}/v2.0");
            let issuer = if MULTI_TENANT.contains(&tenant) {
                "https://login.microsoftonline.com/{tenantid}/v2.0".to_owned()
            } else {
                base.clone()
            };
            (
                issuer,
                Some(format!("{base}/.well-known/openid-configuration")),
                "Microsoft",
            )
        }
        kind => {
            let Some(issuer) = p.issuer.clone() else {
                err(
                    "issuer",
                    "missing".into(),
                    "set the provider's issuer URL, exactly as its metadata publishes it",
                );
                return None;
            };
            let display = match kind {
                ProviderKind::Okta => "Okta",
                ProviderKind::Keycloak => "Keycloak",
                ProviderKind::Auth0 => "Auth0",
                _ => p.id.as_str(),
            };
            (issuer, None, display)
        }
    };
    if p.kind != ProviderKind::Microsoft {
        if let Err(e) = check_endpoint_url(&issuer) {
            err(
                "issuer",
                e,
                "use https (plain http only on a loopback address)",
            );
        }
    }
    if p.client_id.is_empty() || p.client_secret.is_empty() {
        err(
            "client_secret",
            "client_id and client_secret are required".into(),
            "register the gateway at the provider as a confidential web client and copy both here (the secret from `${ENV}`)",
        );
    }
    let default_scopes: &[&str] = if p.kind == ProviderKind::Github {
        &["read:user", "user:email", "read:org"]
    } else {
        &["openid", "email", "profile"]
    };
    let scopes = p
        .scopes
        .clone()
        .unwrap_or_else(|| default_scopes.iter().map(|s| s.to_string()).collect());
    if p.kind != ProviderKind::Github && !scopes.iter().any(|s| s == "openid") {
        err(
            "scopes",
            "`openid` is missing".into(),
            "OpenID Connect needs the `openid` scope; add it",
        );
    }
    let discovery_url = discovery_url.unwrap_or_else(|| {
        format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        )
    });
    Some(IdentityProvider {
        id: p.id.clone(),
        kind: p.kind,
        issuer,
        discovery_url,
        client_id: p.client_id.clone(),
        client_secret: Secret::new(p.client_secret.clone()),
        scopes,
        display_name: p.display_name.clone().unwrap_or_else(|| display.to_owned()),
    })
}

/// One access rule.
fn rule(
    r: &RawAccessRule,
    path: &str,
    ids: &BTreeSet<&str>,
    errors: &mut Vec<ConfigError>,
) -> AccessRule {
    let when = &r.when;
    if let Some(idp) = when.idp.as_deref().filter(|i| !ids.contains(i)) {
        errors.push(ConfigError::new(
            &format!("{path}.when.idp"),
            format!("`{idp}` is not one of identity_providers"),
            "name a provider by its `id`",
        ));
    }
    if let Some(domain) = when.email_domain.as_deref() {
        if domain.is_empty() || domain.contains('@') || domain.starts_with('.') {
            errors.push(ConfigError::new(
                &format!("{path}.when.email_domain"),
                format!("`{domain}` is not a domain"),
                "write the domain alone, e.g. `example.com`",
            ));
        }
        if when.email_verified != Some(true) {
            errors.push(ConfigError::new(
                &format!("{path}.when.email_verified"),
                "a domain rule without `email_verified: true` admits anyone who can type an address at that domain into an IdP profile",
                "add `email_verified: true`",
            ));
        }
    }
    if when.claim.contains_key("email") && when.email_verified != Some(true) {
        errors.push(ConfigError::new(
            &format!("{path}.when.email_verified"),
            "an `email` claim rule without `email_verified: true` trusts an address nobody checked",
            "add `email_verified: true`",
        ));
    }
    if r.scopes.is_empty() {
        errors.push(ConfigError::new(
            &format!("{path}.scopes"),
            "empty",
            "list the scopes a matching person may grant",
        ));
    }
    AccessRule {
        idp: when.idp.clone(),
        email_domain: when.email_domain.as_ref().map(|d| d.to_ascii_lowercase()),
        email_verified: when.email_verified,
        claims: when
            .claim
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            // GitHub's names are case-insensitive; its claims are lowercase.
            .chain(
                when.org
                    .iter()
                    .map(|o| ("orgs".to_owned(), o.to_ascii_lowercase())),
            )
            .chain(
                when.team
                    .iter()
                    .map(|t| ("teams".to_owned(), t.to_ascii_lowercase())),
            )
            .collect(),
        scopes: r.scopes.iter().cloned().collect(),
    }
}

/// Whether `text` is a GUID (`8-4-4-4-12` hex digits).
fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}
