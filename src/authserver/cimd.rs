//! Client ID Metadata Documents: a `client_id` that is an `https` URL names
//! a JSON document describing the client, fetched here.
//!
//! The fetch is guarded against SSRF: the host is resolved first and every
//! address checked (loopback and private networks refused unless
//! `allow_private_addresses`; link-local, which includes cloud metadata
//! services such as 169.254.169.254, and unspecified, multicast or
//! broadcast addresses always refused); the connection is pinned to the
//! checked address, so DNS cannot change the answer in between, and no
//! environment proxy is used. Redirects are refused (the draft forbids
//! following them). The answer must be a 200 with a JSON content type,
//! limited in size and time, whose `client_id` is the URL exactly, with
//! `client_name` and valid `redirect_uris`; it is cached as its
//! `Cache-Control` allows (1 minute to 24 hours).

use super::clients::{Client, ClientMetadata};
use super::grant::GrantType;
use super::redirect_uri;
use moka::sync::Cache;
use moka::Expiry;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest document accepted.
const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

/// Fetch policy (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct FetchPolicy {
    /// Allow loopback and private-network targets (development and tests).
    pub allow_private_addresses: bool,
    /// Allow `http` URLs (development and tests only).
    pub allow_http: bool,
    /// Time limit of the whole fetch.
    pub timeout: Duration,
}

/// Whether `ip` may be fetched from under `policy`.
pub fn address_allowed(ip: IpAddr, policy: &FetchPolicy) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (never, private) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || o[0] == 0,
                v4.is_loopback() || v4.is_private() || (o[0] == 100 && (64..128).contains(&o[1])),
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // NAT64 (64:ff9b::/96, 64:ff9b:1::/48), 6to4 (2002::/16),
            // IPv4-compatible (::/96) and site-local (fec0::/10) can all
            // reach IPv4 or internal space: never.
            let translated = (s[0] == 0x64 && s[1] == 0xff9b)
                || s[0] == 0x2002
                || (s[..6] == [0; 6])
                || (s[0] & 0xffc0) == 0xfec0;
            (
                (s[0] & 0xffc0) == 0xfe80
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (translated && !v6.is_loopback()),
                v6.is_loopback() || (s[0] & 0xfe00) == 0xfc00,
            )
        }
    };
    !never && (!private || policy.allow_private_addresses)
}

/// Why a document was refused.
pub type CimdError = String;

struct Cached {
    client: Arc<Client>,
    ttl: Duration,
}

struct CacheTtl;

impl Expiry<String, Arc<Cached>> for CacheTtl {
    fn expire_after_create(&self, _: &String, v: &Arc<Cached>, _: Instant) -> Option<Duration> {
        Some(v.ttl)
    }
}

/// Resolves and caches metadata documents.
pub struct MetadataDocuments {
    policy: FetchPolicy,
    cache: Cache<String, Arc<Cached>>,
    /// Refusals, remembered for a minute: a flood of requests naming one
    /// bad URL costs one fetch.
    refused: Cache<String, CimdError>,
}

impl MetadataDocuments {
    pub fn new(policy: FetchPolicy) -> Self {
        Self {
            policy,
            cache: Cache::builder()
                .max_capacity(10_000)
                .expire_after(CacheTtl)
                .build(),
            refused: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Whether `client_id` is a metadata-document URL.
    pub fn is_document_url(&self, client_id: &str) -> bool {
        client_id.starts_with("https://")
            || (self.policy.allow_http && client_id.starts_with("http://"))
    }

    /// The client a document URL describes.
    pub async fn client(&self, url: &str) -> Result<Arc<Client>, CimdError> {
        if let Some(hit) = self.cache.get(url) {
            return Ok(hit.client.clone());
        }
        if let Some(why) = self.refused.get(url) {
            return Err(why);
        }
        let fetched = tokio::time::timeout(self.policy.timeout, self.fetch(url))
            .await
            .map_err(|_| format!("no answer within {:?}", self.policy.timeout))
            .and_then(|r| r)
            .and_then(|(doc, ttl)| validate(url, &doc).map(|c| (Arc::new(c), ttl)));
        let (client, ttl) = match fetched {
            Ok(ok) => ok,
            Err(why) => {
                self.refused.insert(url.to_owned(), why.clone());
                return Err(why);
            }
        };
        if let Some(ttl) = ttl {
            self.cache.insert(
                url.to_owned(),
                Arc::new(Cached {
                    client: client.clone(),
                    ttl,
                }),
            );
        }
        tracing::info!(client_id = %url, "client metadata document loaded");
        Ok(client)
    }

    async fn fetch(&self, url: &str) -> Result<(Value, Option<Duration>), CimdError> {
        let url = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let scheme_ok =
            url.scheme() == "https" || (self.policy.allow_http && url.scheme() == "http");
        if !scheme_ok || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!(
                "`{url}` is not an https URL without fragment or user info"
            ));
        }
        let host = url.host_str().ok_or("no host")?.to_owned();
        let port = url.port_or_known_default().ok_or("no port")?;
        let addr = self.vetted_address(&host, port).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve(host.trim_start_matches('[').trim_end_matches(']'), addr)
            .build()
            .map_err(|e| e.to_string())?;
        let mut resp = client
            .get(url.clone())
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching `{url}`: {e}"))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!(
                "`{url}` answered {} (a 200 is required; redirects are not followed)",
                resp.status()
            ));
        }
        let json_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("application/json"));
        if !json_type {
            return Err(format!("`{url}` is not served as application/json"));
        }
        let ttl = cache_ttl(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
        );
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("document larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let doc = crate::mcp::strict_json::parse_strict(&body)
            .map_err(|e| format!("not valid JSON: {e:?}"))?;
        Ok((doc, ttl))
    }

    /// The first resolved address of `host`, after checking all of them.
    async fn vetted_address(&self, host: &str, port: u16) -> Result<SocketAddr, CimdError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
            .collect();
        if let Some(bad) = addrs
            .iter()
            .find(|a| !address_allowed(a.ip(), &self.policy))
        {
            return Err(format!(
                "`{host}` resolves to {}, a private, loopback, link-local or metadata address",
                bad.ip()
            ));
        }
        addrs
            .first()
            .copied()
            .ok_or_else(|| format!("`{host}` resolves to nothing"))
    }
}

/// `max-age` bounded to 1 minute .. 24 hours (1 hour when absent); `None`
/// for `no-store`/`no-cache`.
fn cache_ttl(header: Option<&str>) -> Option<Duration> {
    let header = header.unwrap_or("").to_ascii_lowercase();
    if header.contains("no-store") || header.contains("no-cache") {
        return None;
    }
    let max_age = header
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.parse::<u64>().ok())
        .unwrap_or(3600);
    Some(Duration::from_secs(max_age.clamp(60, 86_400)))
}

fn validate(url: &str, doc: &Value) -> Result<Client, CimdError> {
    if doc.get("client_id").and_then(Value::as_str) != Some(url) {
        return Err("the document's client_id is not its URL".into());
    }
    let name = doc
        .get("client_name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.chars().count() <= 200);
    let Some(name) = name else {
        return Err("the document needs a client_name of 1-200 characters".into());
    };
    let redirect_uris: Vec<String> = doc
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if redirect_uris.is_empty() || redirect_uris.len() > 10 {
        return Err("the document needs 1-10 redirect_uris".into());
    }
    let application_type = match doc.get("application_type").and_then(Value::as_str) {
        None | Some("web") => "web",
        Some("native") => "native",
        Some(other) => {
            return Err(format!(
                "application_type `{other}` is not `web` or `native`"
            ))
        }
    };
    for uri in &redirect_uris {
        redirect_uri::validate(uri, application_type)?;
    }
    let method = doc
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("none");
    if method != "none" {
        return Err(format!(
            "token_endpoint_auth_method `{method}` is not supported for metadata documents"
        ));
    }
    Ok(Client {
        id: url.to_owned(),
        secret_hash: None,
        meta: ClientMetadata {
            redirect_uris,
            client_name: Some(name.to_owned()),
            token_endpoint_auth_method: "none".into(),
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            response_types: vec!["code".into()],
            application_type: application_type.into(),
            scope: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: FetchPolicy = FetchPolicy {
        allow_private_addresses: false,
        allow_http: false,
        timeout: Duration::from_secs(5),
    };

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!address_allowed(ip.parse().unwrap(), &STRICT), "{ip}");
        }
        assert!(address_allowed("93.184.216.34".parse().unwrap(), &STRICT));
        let dev = FetchPolicy {
            allow_private_addresses: true,
            ..STRICT
        };
        assert!(address_allowed("127.0.0.1".parse().unwrap(), &dev));
        assert!(
            !address_allowed("169.254.169.254".parse().unwrap(), &dev),
            "metadata services never"
        );
    }

    #[test]
    fn cache_lifetime_follows_cache_control_within_bounds() {
        assert_eq!(
            cache_ttl(Some("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(cache_ttl(Some("max-age=5")), Some(Duration::from_secs(60)));
        assert_eq!(cache_ttl(None), Some(Duration::from_secs(3600)));
        assert_eq!(cache_ttl(Some("no-store")), None);
    }
}
