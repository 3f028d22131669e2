//! The HTML pages (askama templates in `templates/`, which escape every
//! value), served with headers that forbid framing and caching.
//!
//! Form field names are part of the interface (tests and scripts drive
//! these forms): login posts `flow`, `csrf_token`, `username`, `password`
//! to `/login`; consent posts `flow`, `csrf_token` and `action`
//! (`approve` or `deny`) to `/consent`.

use super::AsState;
use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub product: &'a str,
    pub logo: Option<&'a str>,
    pub client_name: &'a str,
    pub action: &'a str,
    pub flow: &'a str,
    pub csrf: &'a str,
    pub error: Option<&'a str>,
    /// A button per identity provider: its sign-in URL and label.
    pub providers: &'a [(String, String)],
    /// Whether the password form is shown (there are local users).
    pub password: bool,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub product: &'a str,
    pub logo: Option<&'a str>,
    pub client_name: &'a str,
    /// The upstream the token is for: its `resource_name` and host.
    pub resource_name: &'a str,
    pub resource_host: &'a str,
    pub username: &'a str,
    /// Signs this browser out and back to the login page.
    pub sign_out: &'a str,
    pub redirect_host: &'a str,
    /// The redirect goes to an app on the user's own machine (any port).
    pub loopback: bool,
    /// Each scope with its description, when the configuration gives one.
    pub scopes: &'a [(String, Option<String>)],
    pub action: &'a str,
    pub flow: &'a str,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub product: &'a str,
    pub logo: Option<&'a str>,
    pub message: &'a str,
}

/// Renders a page with the security headers every page gets.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    let html = match page.render() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An error shown to the user instead of redirecting (unknown client,
/// unregistered redirect URI: never an open redirector).
pub fn error(state: &AsState, status: StatusCode, message: &str) -> Response {
    tracing::info!(message = %message.escape_debug(), "authorization request refused with an error page");
    let settings = state.settings();
    render(
        status,
        &ErrorPage {
            product: &settings.config.product_name,
            logo: settings.logo.as_deref(),
            message,
        },
    )
}
