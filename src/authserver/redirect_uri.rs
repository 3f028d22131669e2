//! Which redirect URIs a client may register, and which presented URI
//! matches a registered one.
//!
//! - `https` with a host: any client.
//! - `http` on a loopback host (`127.0.0.0/8`, `[::1]`, `localhost`): any
//!   client; native apps and CLIs pick a free port per login, so the port
//!   is not compared (RFC 8252 §7.3, OAuth 2.1 §8.4.2). `localhost` is
//!   treated like the loopback literals because MCP clients register it.
//! - A private-use scheme in reverse-DNS form (`com.example.app:/cb`, RFC
//!   8252 §7.1): native clients only. Schemes that run or read something in
//!   the browser (`javascript:`, `data:`, `file:` …) are never accepted, and
//!   a scheme without a dot is not a private-use one.
//!
//! Everything else is compared as an exact string (RFC 9700 §4.1.3).

use url::{Host, Url};

/// Schemes a browser would execute or read locally: never a redirect.
const REFUSED_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "filesystem",
];

/// Whether `uri` may be registered by a client of `application_type`
/// (`web` or `native`); the error says why not.
pub fn validate(uri: &str, application_type: &str) -> Result<(), String> {
    let url = Url::parse(uri).map_err(|e| format!("`{uri}` is not a URL ({e})"))?;
    if url.fragment().is_some() {
        return Err(format!("`{uri}` has a fragment"));
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" | "https" => Err(format!(
            "`{uri}` must be https, or http on a loopback address"
        )),
        scheme if REFUSED_SCHEMES.contains(&scheme) => Err(format!(
            "`{uri}`: the `{scheme}:` scheme is never a redirect"
        )),
        scheme if !scheme.contains('.') => Err(format!(
            "`{uri}`: a private-use scheme must be a reverse domain name such as `com.example.app`"
        )),
        _ if application_type != "native" => Err(format!(
            "`{uri}`: private-use schemes are for clients registered with application_type `native`"
        )),
        _ => Ok(()),
    }
}

/// Whether `presented` (from an authorization request) matches the
/// registered URI: exactly, or, for a loopback `http` URI, in everything
/// but the port.
pub fn matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(registered), Ok(presented)) = (Url::parse(registered), Url::parse(presented)) else {
        return false;
    };
    registered.scheme() == "http"
        && is_loopback(&registered)
        && presented.scheme() == "http"
        && registered.host() == presented.host()
        && registered.username() == presented.username()
        && registered.password().is_none()
        && presented.password().is_none()
        && registered.path() == presented.path()
        && registered.query() == presented.query()
        && presented.fragment().is_none()
}

/// Whether the URI points at the user's own machine (its port may vary).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_match_on_any_port_rfc_8252_7_3() {
        assert!(matches(
            "http://127.0.0.1:5000/cb",
            "http://127.0.0.1:5001/cb"
        ));
        assert!(matches("http://127.0.0.1/cb", "http://127.0.0.1:49152/cb"));
        assert!(matches("http://[::1]:5000/cb", "http://[::1]:61000/cb"));
        assert!(matches(
            "http://localhost:3000/cb",
            "http://localhost:3999/cb"
        ));
    }

    #[test]
    fn loopback_redirects_still_match_scheme_host_path_and_query_exactly() {
        let registered = "http://127.0.0.1:5000/cb?x=1";
        for other in [
            "http://127.0.0.1:5001/cb",
            "http://127.0.0.1:5001/cb?x=2",
            "http://127.0.0.1:5001/other?x=1",
            "http://127.0.0.2:5000/cb?x=1",
            "http://localhost:5000/cb?x=1",
            "https://127.0.0.1:5000/cb?x=1",
            "http://user@127.0.0.1:5000/cb?x=1",
            "http://127.0.0.1:5000/cb?x=1#frag",
        ] {
            assert!(!matches(registered, other), "{other}");
        }
    }

    #[test]
    fn other_redirects_match_only_exactly() {
        assert!(matches("https://app.example/cb", "https://app.example/cb"));
        assert!(!matches(
            "https://app.example:443/cb",
            "https://app.example:8443/cb"
        ));
        assert!(!matches(
            "https://app.example/cb",
            "https://app.example/cb/"
        ));
        assert!(!matches("com.example.app:/cb", "com.example.app:/cb2"));
    }

    #[test]
    fn native_clients_may_register_reverse_dns_private_schemes_rfc_8252_7_1() {
        assert_eq!(validate("com.example.app:/oauth/cb", "native"), Ok(()));
        assert!(validate("com.example.app:/oauth/cb", "web").is_err());
        assert!(validate("myapp:/cb", "native").is_err(), "no dot");
    }

    #[test]
    fn executable_and_local_schemes_are_never_redirects() {
        for uri in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "vbscript:x",
            "http://example.com/cb",
            "https://app.example/cb#f",
        ] {
            assert!(validate(uri, "native").is_err(), "{uri}");
        }
        assert_eq!(validate("http://127.0.0.1:8080/cb", "web"), Ok(()));
        assert_eq!(validate("http://[::1]/cb", "native"), Ok(()));
    }
}
