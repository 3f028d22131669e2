//! GitHub (and GitHub Enterprise Server) as an identity provider: OAuth 2.0
//! without OpenID Connect. The person is who GitHub's REST API says the
//! access token belongs to: `sub` is the numeric user id (stable across
//! renames), with `login`, `name`, the primary verified email, and the
//! organisations and teams they belong to (`orgs`, `teams` as
//! `org/team-slug`, lowercase) for the access rules. The access token is
//! kept to ask the API again at each refresh; a token GitHub no longer
//! accepts (revoked, app deauthorized) ends the grant.

use super::oidc::{Metadata, RpError};
use crate::auth::fetch;
use crate::config::IdentityProvider;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoints of a GitHub at `issuer` (its web address).
pub fn metadata(config: &IdentityProvider) -> Metadata {
    let web = &config.issuer;
    Metadata {
        issuer: web.clone(),
        authorization_endpoint: format!("{web}/login/oauth/authorize"),
        token_endpoint: format!("{web}/login/oauth/access_token"),
        userinfo_endpoint: None,
        jwks_uri: String::new(),
        id_token_signing_alg_values_supported: Vec::new(),
        authorization_response_iss_parameter_supported: false,
        token_endpoint_auth_methods_supported: vec!["client_secret_post".into()],
    }
}

/// Exchanges `code` for an access token (GitHub answers errors with 200
/// and an `error` field).
pub async fn exchange(
    http: &reqwest::Client,
    config: &IdentityProvider,
    metadata: &Metadata,
    form: &[(&str, &str)],
) -> Result<String, RpError> {
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        error: Option<String>,
    }
    let mut form = form.to_vec();
    form.push(("client_id", &config.client_id));
    form.push(("client_secret", config.client_secret.expose()));
    let answer: Answer = fetch::json(
        http.post(&metadata.token_endpoint).form(&form),
        CALL_TIMEOUT,
    )
    .await
    .map_err(|e| RpError::Unreachable(format!("code exchange: {e}")))?;
    answer.access_token.ok_or_else(|| {
        RpError::Refused(format!(
            "code exchange: {}",
            answer.error.as_deref().unwrap_or("no access token")
        ))
    })
}

/// Who `token` belongs to, as claims.
pub async fn claims(
    http: &reqwest::Client,
    config: &IdentityProvider,
    token: &str,
) -> Result<Value, RpError> {
    let api = config.discovery_url.trim_end_matches('/');
    let get = |path: &str| {
        http.get(format!("{api}{path}"))
            .bearer_auth(token)
            .header("accept", "application/vnd.github+json")
    };
    let failed = |e: String| {
        if e.contains("HTTP status 401") {
            RpError::Refused(format!("GitHub no longer accepts the token ({e})"))
        } else {
            RpError::Unreachable(format!("GitHub API: {e}"))
        }
    };
    let user: Value = fetch::json(get("/user"), CALL_TIMEOUT)
        .await
        .map_err(failed)?;
    let id = user["id"]
        .as_u64()
        .ok_or_else(|| RpError::Refused("GitHub's user has no id".into()))?;
    #[derive(Deserialize)]
    struct Email {
        email: String,
        primary: bool,
        verified: bool,
    }
    let emails: Vec<Email> = fetch::json(get("/user/emails"), CALL_TIMEOUT)
        .await
        .map_err(failed)?;
    let primary = emails.iter().find(|e| e.primary);
    let orgs: Vec<Value> = fetch::json(get("/user/orgs"), CALL_TIMEOUT)
        .await
        .map_err(failed)?;
    let teams: Vec<Value> = fetch::json(get("/user/teams"), CALL_TIMEOUT)
        .await
        .map_err(failed)?;
    let lower = |v: &Value| v.as_str().map(str::to_ascii_lowercase);
    Ok(json!({
        "iss": config.issuer,
        "sub": id.to_string(),
        "login": user["login"],
        "name": user["name"],
        "email": primary.map(|e| e.email.clone()),
        "email_verified": primary.is_some_and(|e| e.verified),
        "orgs": orgs.iter().filter_map(|o| lower(&o["login"])).collect::<Vec<_>>(),
        "teams": teams
            .iter()
            .filter_map(|t| Some(format!("{}/{}", lower(&t["organization"]["login"])?, lower(&t["slug"])?)))
            .collect::<Vec<_>>(),
    }))
}
