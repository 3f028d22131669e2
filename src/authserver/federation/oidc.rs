//! The gateway as an OpenID Connect relying party of one identity
//! provider: discovery, the authorization request (code, PKCE S256,
//! `state`, `nonce`), the code exchange as a confidential client, and the
//! ID token's checks (signature from the provider's JWKS with rotation,
//! `alg` from its metadata and never `none` or HMAC, `iss`, `aud`, `azp`,
//! `exp`, `iat`, `nonce`), with userinfo when the ID token lacks claims.

use crate::auth::fetch;
use crate::auth::jwks::KeyStore;
use crate::config::{IdentityProvider, JwtIssuer};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Time limit of one call to the provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;

/// What the provider's metadata says (the fields the gateway uses).
#[derive(Debug, Deserialize)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// One provider: its settings, and its metadata and keys once fetched.
pub struct Provider {
    pub config: IdentityProvider,
    http: reqwest::Client,
    discovered: Mutex<Option<(Arc<Metadata>, Arc<KeyStore>)>>,
}

/// Why a sign-in through the provider failed: shown to the person (never
/// with a token in it) and logged.
#[derive(Debug, thiserror::Error)]
pub enum RpError {
    #[error("the identity provider cannot be reached ({0})")]
    Unreachable(String),
    #[error("the identity provider's answer is not acceptable: {0}")]
    Refused(String),
}

impl Provider {
    pub fn new(config: IdentityProvider, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            discovered: Mutex::new(None),
        }
    }

    /// The metadata and keys, fetched on first use (and again after a
    /// failure).
    pub async fn discover(&self) -> Result<(Arc<Metadata>, Arc<KeyStore>), RpError> {
        let mut discovered = self.discovered.lock().await;
        if let Some(d) = discovered.as_ref() {
            return Ok(d.clone());
        }
        if self.is_github() {
            let metadata = Arc::new(super::github::metadata(&self.config));
            let keys = Arc::new(KeyStore::new(self.key_config(&metadata), self.http.clone()));
            *discovered = Some((metadata, keys));
            return Ok(discovered.clone().expect("just set"));
        }
        let metadata: Metadata =
            fetch::json(self.http.get(&self.config.discovery_url), CALL_TIMEOUT)
                .await
                .map_err(|e| RpError::Unreachable(format!("{}: {e}", self.config.discovery_url)))?;
        let template = self.config.issuer.contains("{tenantid}");
        if (template && metadata.issuer != self.config.issuer)
            || (!template && !self.issuer_matches(&metadata.issuer, None))
        {
            return Err(RpError::Refused(format!(
                "its metadata names issuer `{}`, not `{}`",
                metadata.issuer, self.config.issuer
            )));
        }
        let keys = Arc::new(KeyStore::new(self.key_config(&metadata), self.http.clone()));
        for (name, url) in [
            (
                "authorization_endpoint",
                Some(&metadata.authorization_endpoint),
            ),
            ("token_endpoint", Some(&metadata.token_endpoint)),
            ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
            ("jwks_uri", Some(&metadata.jwks_uri)),
        ] {
            if let Some(Err(e)) = url.map(|u| crate::config::check_endpoint_url(u)) {
                return Err(RpError::Refused(format!("its {name}: {e}")));
            }
        }
        let found = (Arc::new(metadata), keys);
        *discovered = Some(found.clone());
        Ok(found)
    }

    /// The asymmetric algorithms the provider signs ID tokens with (RS256,
    /// the OpenID Connect default, when its metadata says nothing).
    fn algorithms(&self, metadata: &Metadata) -> Vec<Algorithm> {
        let listed: Vec<Algorithm> = metadata
            .id_token_signing_alg_values_supported
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .filter(|a| !matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
            .collect();
        if listed.is_empty() {
            vec![Algorithm::RS256]
        } else {
            listed
        }
    }

    /// The key store settings for the provider's ID tokens.
    fn key_config(&self, metadata: &Metadata) -> JwtIssuer {
        JwtIssuer {
            issuer: self.config.issuer.clone(),
            jwks_uri: Some(metadata.jwks_uri.clone()),
            algorithms: self.algorithms(metadata),
            hmac_secret: None,
            leeway: Duration::from_secs(LEEWAY_SECS),
            jwks_refresh_interval: Duration::from_secs(600),
            // ID tokens come from the provider itself (the code exchange),
            // so an unknown `kid` is a rotation, not an attacker.
            jwks_min_refresh_interval: Duration::from_secs(1),
            fetch_timeout: CALL_TIMEOUT,
            token_types: Vec::new(),
        }
    }

    fn is_github(&self) -> bool {
        self.config.kind == crate::config::ProviderKind::Github
    }

    /// Whether `iss` is the provider's issuer (for Entra ID's multi-tenant
    /// endpoints, its template filled with the token's `tid`).
    pub fn issuer_matches(&self, iss: &str, tid: Option<&str>) -> bool {
        match (self.config.issuer.contains("{tenantid}"), tid) {
            (true, Some(tid)) => iss == self.config.issuer.replace("{tenantid}", tid),
            (true, None) => false,
            (false, _) => iss == self.config.issuer,
        }
    }

    /// The URL sending the browser to the provider.
    pub fn authorization_url(
        &self,
        metadata: &Metadata,
        request: &AuthorizationRequest<'_>,
    ) -> Result<String, RpError> {
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| RpError::Refused(format!("authorization_endpoint: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.config.client_id)
                .append_pair("redirect_uri", request.redirect_uri)
                .append_pair("scope", &self.config.scopes.join(" "))
                .append_pair("state", request.state)
                .append_pair("nonce", request.nonce)
                .append_pair(
                    "code_challenge",
                    &crate::authserver::pkce::s256(request.verifier),
                )
                .append_pair("code_challenge_method", "S256");
            if let Some(hint) = request.login_hint {
                q.append_pair("login_hint", hint);
            }
            if request.force_login {
                q.append_pair("prompt", "login").append_pair("max_age", "0");
            }
        }
        Ok(url.into())
    }

    /// Exchanges `code` and checks the ID token: the person's claims (ID
    /// token, completed from userinfo when it lacks `email`), and the
    /// provider's refresh token when it gave one (kept to check the person
    /// again at each refresh).
    pub async fn sign_in(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
        nonce: &str,
        fresh_since: Option<u64>,
    ) -> Result<SignedIn, RpError> {
        let (metadata, keys) = self.discover().await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        if self.is_github() {
            let token = super::github::exchange(&self.http, &self.config, &metadata, &form).await?;
            let claims = super::github::claims(&self.http, &self.config, &token).await?;
            return Ok(SignedIn {
                claims,
                refresh_token: Some(token),
            });
        }
        let tokens = self
            .token_request(&metadata, &form)
            .await
            .map_err(|e| RpError::Refused(format!("code exchange: {}", e.text)))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| RpError::Refused("no id_token in the token response".into()))?;
        let mut claims = self
            .verify_id_token(&id_token, &metadata, &keys, Some(nonce))
            .await?;
        // prompt=login: the provider must have signed the person in anew.
        if let Some(since) = fresh_since {
            let auth_time = claims["auth_time"].as_u64().unwrap_or(0);
            if auth_time + LEEWAY_SECS < since {
                return Err(RpError::Refused(
                    "the provider did not sign the person in again (auth_time)".into(),
                ));
            }
        }
        self.complete(&metadata, &mut claims, tokens.access_token.as_deref())
            .await?;
        Ok(SignedIn {
            claims,
            refresh_token: tokens.refresh_token,
        })
    }

    /// The person's claims now, asked of the provider with its refresh
    /// token: `Refused` when the provider no longer vouches for them (the
    /// grant was revoked, the account removed), `Unreachable` when it
    /// cannot be asked. The subject must stay `sub`.
    pub async fn recheck(&self, refresh_token: &str, sub: &str) -> Result<SignedIn, RpError> {
        if self.is_github() {
            // GitHub's token is asked of the API again, as it is.
            let claims = super::github::claims(&self.http, &self.config, refresh_token).await?;
            if claims["sub"] != sub {
                return Err(RpError::Refused("GitHub speaks of another user".into()));
            }
            return Ok(SignedIn {
                claims,
                refresh_token: Some(refresh_token.to_owned()),
            });
        }
        let (metadata, keys) = self.discover().await?;
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let tokens = self
            .token_request(&metadata, &form)
            .await
            // Only `invalid_grant` means the provider no longer vouches for
            // the person; a rate limit or a misconfigured secret is an outage.
            .map_err(|e| match e.oauth_error.as_deref() {
                Some("invalid_grant") => RpError::Refused(format!("refresh: {}", e.text)),
                _ => RpError::Unreachable(format!("refresh: {}", e.text)),
            })?;
        let mut claims = match &tokens.id_token {
            Some(id_token) => {
                self.verify_id_token(id_token, &metadata, &keys, None)
                    .await?
            }
            None => serde_json::json!({ "sub": sub }),
        };
        if claims["sub"] != sub {
            return Err(RpError::Refused(
                "the provider speaks of another subject".into(),
            ));
        }
        let access = tokens.access_token.as_deref();
        if tokens.id_token.is_none() {
            let userinfo = metadata.userinfo_endpoint.as_deref().ok_or_else(|| {
                RpError::Refused("no ID token on refresh and no userinfo endpoint".into())
            })?;
            let token =
                access.ok_or_else(|| RpError::Refused("no access token on refresh".into()))?;
            self.complete_from_userinfo(&mut claims, userinfo, token)
                .await?;
        } else {
            self.complete(&metadata, &mut claims, access).await?;
        }
        Ok(SignedIn {
            claims,
            refresh_token: tokens
                .refresh_token
                .or_else(|| Some(refresh_token.to_owned())),
        })
    }

    /// Userinfo fills in when the ID token has no `email`.
    async fn complete(
        &self,
        metadata: &Metadata,
        claims: &mut Value,
        access: Option<&str>,
    ) -> Result<(), RpError> {
        if claims.get("email").is_some() {
            return Ok(());
        }
        match (&metadata.userinfo_endpoint, access) {
            (Some(userinfo), Some(access)) => {
                self.complete_from_userinfo(claims, userinfo, access).await
            }
            _ => Ok(()),
        }
    }

    /// A request to the token endpoint, authenticated as the confidential
    /// client (Basic, or the form where only that is supported).
    async fn token_request(
        &self,
        metadata: &Metadata,
        form: &[(&str, &str)],
    ) -> Result<Tokens, fetch::FetchError> {
        let request = self.http.post(&metadata.token_endpoint);
        let post_only = !metadata.token_endpoint_auth_methods_supported.is_empty()
            && !metadata
                .token_endpoint_auth_methods_supported
                .iter()
                .any(|m| m == "client_secret_basic");
        let request = if post_only {
            let mut form = form.to_vec();
            form.push(("client_id", &self.config.client_id));
            form.push(("client_secret", self.config.client_secret.expose()));
            request.form(&form)
        } else {
            // RFC 6749 §2.3.1: both form-encoded before Basic.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            request
                .basic_auth(
                    enc(&self.config.client_id),
                    Some(enc(self.config.client_secret.expose())),
                )
                .form(form)
        };
        fetch::json_or_status(request, CALL_TIMEOUT).await
    }

    /// The ID token's claims, once every check passed.
    async fn verify_id_token(
        &self,
        token: &str,
        metadata: &Metadata,
        keys: &KeyStore,
        nonce: Option<&str>,
    ) -> Result<Value, RpError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| RpError::Refused(format!("unreadable ID token: {e}")))?;
        let alg = header.alg;
        if !self.algorithms(metadata).contains(&alg) {
            return Err(RpError::Refused(format!(
                "ID token signed with {alg:?}, which the provider does not publish"
            )));
        }
        let candidates = keys
            .keys_for(header.kid.as_deref(), alg)
            .await
            .map_err(|e| RpError::Refused(format!("no key for the ID token: {e}")))?;
        let mut validation = Validation::new(alg);
        validation.set_audience(&[&self.config.client_id]);
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        let mut last = None;
        for key in candidates {
            match jsonwebtoken::decode::<Value>(token, &key, &validation) {
                Ok(data) => {
                    let claims = data.claims;
                    self.check_claims(&claims, nonce)?;
                    return Ok(claims);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(RpError::Refused(format!(
            "ID token rejected: {}",
            last.map_or("no key".to_owned(), |e| e.to_string())
        )))
    }

    /// What the signature check leaves: `iss`, `azp`, `iat`, `nonce` (at
    /// sign-in; a refreshed ID token need not repeat it), `sub`.
    fn check_claims(&self, claims: &Value, nonce: Option<&str>) -> Result<(), RpError> {
        let iss = claims["iss"].as_str().unwrap_or_default();
        if !self.issuer_matches(iss, claims["tid"].as_str()) {
            return Err(RpError::Refused(format!("ID token from issuer `{iss}`")));
        }
        let audiences = match &claims["aud"] {
            Value::Array(a) => a.len(),
            _ => 1,
        };
        let azp = claims["azp"].as_str();
        if (audiences > 1 || azp.is_some()) && azp != Some(self.config.client_id.as_str()) {
            return Err(RpError::Refused(
                "ID token issued to another party (azp)".into(),
            ));
        }
        let now = crate::auth::now_secs();
        if claims["iat"]
            .as_u64()
            .is_none_or(|iat| iat > now + LEEWAY_SECS)
        {
            return Err(RpError::Refused("ID token issued in the future".into()));
        }
        let got = claims["nonce"].as_str().unwrap_or_default();
        if nonce.is_some_and(|n| verify_slices_are_equal(n.as_bytes(), got.as_bytes()).is_err()) {
            return Err(RpError::Refused(
                "ID token for another sign-in (nonce)".into(),
            ));
        }
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err(RpError::Refused("ID token without a subject".into()));
        }
        Ok(())
    }

    /// Adds what userinfo knows and the ID token did not say; its `sub`
    /// must be the ID token's.
    async fn complete_from_userinfo(
        &self,
        claims: &mut Value,
        url: &str,
        access: &str,
    ) -> Result<(), RpError> {
        let info: Value = fetch::json(self.http.get(url).bearer_auth(access), CALL_TIMEOUT)
            .await
            .map_err(|e| RpError::Unreachable(format!("userinfo: {e}")))?;
        if info["sub"] != claims["sub"] {
            return Err(RpError::Refused(
                "userinfo speaks of another subject".into(),
            ));
        }
        if let (Value::Object(target), Value::Object(extra)) = (claims, info) {
            for (k, v) in extra {
                target.entry(k).or_insert(v);
            }
        }
        Ok(())
    }
}

/// The token endpoint's answer (the fields the gateway uses).
#[derive(Deserialize)]
struct Tokens {
    id_token: Option<String>,
    access_token: Option<String>,
    refresh_token: Option<String>,
}

/// A person as the provider vouches for them.
pub struct SignedIn {
    pub claims: Value,
    /// The provider's refresh token, to ask again at the next refresh.
    pub refresh_token: Option<String>,
}

/// One authorization request to the provider.
pub struct AuthorizationRequest<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
    pub login_hint: Option<&'a str>,
    pub force_login: bool,
}
