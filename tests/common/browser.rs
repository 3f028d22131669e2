//! A minimal browser for driving the login and consent pages: it keeps
//! cookies and reads form fields and redirects.

use std::collections::HashMap;

/// Cookies across requests.
#[derive(Default)]
pub struct Browser {
    cookies: HashMap<String, String>,
}

/// A response as a browser sees it.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of the form field `name`.
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no field {name} in {}", self.body))
            + marker.len();
        self.body[start..].split('"').next().unwrap().to_owned()
    }

    /// The login form of this page filled in for `username`.
    pub fn login_form(&self, username: &str, password: &str) -> [(&'static str, String); 4] {
        [
            ("flow", self.field("flow")),
            ("csrf_token", self.field("csrf_token")),
            ("username", username.to_owned()),
            ("password", password.to_owned()),
        ]
    }

    /// The consent form of this page with `action` (`approve` or `deny`).
    pub fn consent_form(&self, action: &str) -> [(&'static str, String); 3] {
        [
            ("flow", self.field("flow")),
            ("csrf_token", self.field("csrf_token")),
            ("action", action.to_owned()),
        ]
    }

    /// Where a redirect points.
    pub fn location(&self) -> url::Url {
        url::Url::parse(self.headers["location"].to_str().unwrap()).unwrap()
    }
}

/// The query parameters of a URL.
pub fn query(url: &url::Url) -> HashMap<String, String> {
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends `req` with the cookies held, keeping those it sets.
    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let resp = req
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        for v in resp.headers().get_all("set-cookie") {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, val) = pair.split_once('=').unwrap();
            self.cookies.insert(k.to_owned(), val.to_owned());
        }
        Page {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }
}

impl Browser {
    /// Posts a form as a browser does: the authorization server answers
    /// with a redirect (POST-redirect-GET), which is followed when it leads
    /// to its own `/login` or `/consent` page; a redirect elsewhere (back to
    /// the client) is returned as is.
    pub async fn submit(&mut self, http: &reqwest::Client, req: reqwest::RequestBuilder) -> Page {
        let page = self.send(req).await;
        if page.status != 303 {
            return page;
        }
        let next = page.location();
        if matches!(next.path(), "/login" | "/consent") {
            return Box::pin(self.send(http.get(next.as_str()))).await;
        }
        page
    }
}

impl Browser {
    /// A person at this browser: opens `authorize_url`, logs in as `user`
    /// with `password` if asked, lets `check_consent` look at the consent
    /// page when there is one, approves, and returns the redirect back to
    /// the client (with `code`, `state` and `iss`). A browser already
    /// signed in with the consent remembered goes straight back.
    pub async fn approve(
        &mut self,
        http: &reqwest::Client,
        authorize_url: &str,
        (user, password): (&str, &str),
        check_consent: impl FnOnce(&Page),
    ) -> url::Url {
        let origin = url::Url::parse(authorize_url).unwrap();
        let mut page = self.send(http.get(authorize_url)).await;
        if page.status == 200 && page.body.contains("name=\"password\"") {
            let form = page.login_form(user, password);
            let login = origin.join("/login").unwrap();
            page = self.submit(http, http.post(login).form(&form)).await;
        }
        if page.status == 200 {
            check_consent(&page);
            let form = page.consent_form("approve");
            let consent = origin.join("/consent").unwrap();
            page = self.send(http.post(consent).form(&form)).await;
        }
        assert!(
            page.status == 303 || page.status == 302,
            "authorization did not redirect back: {} {}",
            page.status,
            page.body
        );
        page.location()
    }
}

/// A PKCE S256 pair: (verifier, challenge).
pub fn pkce() -> (String, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let verifier = mcp_oauth_gateway::authserver::random_token(32);
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// An authorization request (authorization code, PKCE S256) as a public
/// client sends the user's browser to it.
pub struct AuthorizeRequest<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub challenge: &'a str,
    pub scope: &'a str,
    pub state: Option<&'a str>,
    /// RFC 8707: the MCP endpoint the token is for.
    pub resource: &'a str,
}

impl AuthorizeRequest<'_> {
    /// The request at `origin`'s `/authorize` (`origin` like `http://host:port`).
    pub fn url(&self, origin: &str) -> String {
        let mut url = url::Url::parse(origin).unwrap().join("/authorize").unwrap();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", self.client_id)
                .append_pair("redirect_uri", self.redirect_uri)
                .append_pair("code_challenge", self.challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(state) = self.state {
                q.append_pair("state", state);
            }
            q.append_pair("scope", self.scope)
                .append_pair("resource", self.resource);
        }
        url.into()
    }
}
