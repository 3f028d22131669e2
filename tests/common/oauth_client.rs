//! An OAuth client of the built-in authorization server, as an MCP client
//! is one: registered by DCR (public, PKCE S256), sending the user to
//! `/authorize` for one MCP endpoint (RFC 8707 `resource`), exchanging its
//! code and refresh tokens at `/token`. The one client helper the
//! authorization-server, browser and real-client tests share.

use super::browser::AuthorizeRequest;
use serde_json::Value;

/// A registered client and the gateway it is a client of.
pub struct OAuthClient {
    pub id: String,
    pub redirect_uri: String,
    /// The gateway's public URL (its origin).
    origin: String,
    /// The MCP endpoint its tokens are for.
    resource: String,
}

impl OAuthClient {
    /// The client registered as `id` at the gateway at `origin`.
    pub fn new(origin: &str, resource: &str, id: &str, redirect_uri: &str) -> Self {
        Self {
            id: id.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            origin: origin.to_owned(),
            resource: resource.to_owned(),
        }
    }

    /// Registers a public client named `name` (RFC 7591) that is sent back
    /// to `redirect_uri`, with the default grant (`authorization_code`).
    pub async fn register(origin: &str, resource: &str, name: &str, redirect_uri: &str) -> Self {
        Self::register_for(
            origin,
            resource,
            name,
            redirect_uri,
            &["authorization_code"],
        )
        .await
    }

    /// Registers a public client as `register` does, for `grant_types`.
    pub async fn register_for(
        origin: &str,
        resource: &str,
        name: &str,
        redirect_uri: &str,
        grant_types: &[&str],
    ) -> Self {
        let doc: Value = reqwest::Client::new()
            .post(format!("{origin}/register"))
            .json(&serde_json::json!({
                "client_name": name,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "none",
                "grant_types": grant_types,
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = doc["client_id"]
            .as_str()
            .unwrap_or_else(|| panic!("registration failed: {doc}"));
        Self::new(origin, resource, id, redirect_uri)
    }

    /// Where the client sends the user (PKCE S256, `resource` = its MCP
    /// endpoint).
    pub fn authorize_url(&self, challenge: &str, scope: &str, state: Option<&str>) -> String {
        AuthorizeRequest {
            client_id: &self.id,
            redirect_uri: &self.redirect_uri,
            challenge,
            scope,
            state,
            resource: &self.resource,
        }
        .url(&self.origin)
    }

    /// Exchanges an authorization code; the status and the JSON body.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        code: &str,
        verifier: &str,
    ) -> (u16, Value) {
        self.token(
            http,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_uri),
                ("client_id", &self.id),
                ("code_verifier", verifier),
                ("resource", &self.resource),
            ],
        )
        .await
    }

    /// Exchanges a refresh token; the status and the JSON body.
    pub async fn refresh(&self, http: &reqwest::Client, refresh: &str) -> (u16, Value) {
        self.refresh_with(http, refresh, &[]).await
    }

    /// Exchanges a refresh token with `more` parameters (`scope`, ...).
    pub async fn refresh_with(
        &self,
        http: &reqwest::Client,
        refresh: &str,
        more: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &self.id),
        ];
        form.extend_from_slice(more);
        self.token(http, &form).await
    }

    async fn token(&self, http: &reqwest::Client, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = http
            .post(format!("{}/token", self.origin))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}
