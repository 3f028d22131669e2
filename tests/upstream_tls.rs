//! `https://` upstreams (issue 16 §1): the gateway verifies the upstream's
//! certificate and host name (the system's roots, or the upstream's own CA
//! bundle), sends SNI, presents a client certificate when configured
//! (mTLS), and speaks HTTP/2 when ALPN offers it. A certificate it cannot
//! verify is a 502 naming the reason; MCP, SSE included, works through TLS.
//! Every upstream here is a real TLS server with certificates from a
//! private test CA.

mod common;

use common::tls::{https_upstream_yaml, yaml_path, Pki, ServerCert, TlsServing, TlsUpstream};
use common::{client, mcp_post, stateless_countdown, Gateway, Upstream};
use serde_json::Value;

/// The gateway with the TLS upstream at `/<name>` (its `/mcp` for MCP
/// names, its root for `raw` names) configured by `tls`.
async fn gateway_for(upstreams: &[(&str, &TlsUpstream, &str, &str)]) -> (Upstream, Gateway) {
    let plain = Upstream::start().await;
    let yaml: String = upstreams
        .iter()
        .map(|(name, up, path, tls)| https_upstream_yaml(name, up.addr, path, tls))
        .collect();
    let gw = Gateway::start_with(&plain, &yaml, "").await;
    (plain, gw)
}

/// `tls` settings trusting `pki` and verifying the name `localhost`.
fn trusting(pki: &Pki, extra: &str) -> String {
    format!(
        "ca_file: {}, server_name: localhost{extra}",
        yaml_path(&pki.ca_file())
    )
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// What the upstream saw of a POST to `/<name>/inspect` (or the gateway's
/// refusal): status and body.
async fn inspect(gw: &Gateway, name: &str) -> (u16, Value) {
    let resp = mcp_post(&client(), &gw.url(&format!("/{name}/inspect")), PING)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn localhost() -> ServerCert<'static> {
    ServerCert {
        names: &["localhost"],
        expired: false,
    }
}

#[tokio::test]
async fn a_verified_https_upstream_serves_mcp_with_sse_through_tls() {
    let pki = Pki::new("mcp");
    let cert = pki.server("server", localhost());
    let up = TlsUpstream::start(TlsServing {
        cert: &cert,
        client_ca: None,
        http2: true,
    })
    .await;
    let tls = trusting(&pki, "");
    let (_plain, gw) = gateway_for(&[("secure", &up, "/mcp", &tls)]).await;
    let resp = stateless_countdown(&client(), &gw.url("/secure"), 3, 100).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = resp.text().await.unwrap();
    let messages = common::rpc_messages("text/event-stream", &body);
    let progress = messages
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .count();
    assert_eq!(progress, 3, "every progress event through TLS: {body}");
    assert!(
        messages
            .iter()
            .any(|m| m["id"] == 9 && m["result"].is_object()),
        "{body}"
    );
}

#[tokio::test]
async fn http2_is_spoken_when_alpn_offers_it_unless_turned_off() {
    let pki = Pki::new("h2");
    let cert = pki.server("server", localhost());
    let up = TlsUpstream::start(TlsServing {
        cert: &cert,
        client_ca: None,
        http2: true,
    })
    .await;
    let (h2, h1) = (trusting(&pki, ""), trusting(&pki, ", http2: false"));
    let (_plain, gw) = gateway_for(&[("raw-h2", &up, "", &h2), ("raw-h1", &up, "", &h1)]).await;
    let (status, seen) = inspect(&gw, "raw-h2").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["version"], "HTTP/2.0", "POST over h2");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "no client credentials over TLS either"
    );
    let get: Value = client()
        .get(gw.url("/raw-h2/inspect"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(get["version"], "HTTP/2.0", "GET through pingora's loop");
    let (status, seen) = inspect(&gw, "raw-h1").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["version"], "HTTP/1.1");
}

/// Each certificate the gateway must refuse, and a word its 502 names it by.
#[tokio::test]
async fn an_unverifiable_upstream_is_a_502_naming_the_reason() {
    let pki = Pki::new("refuse");
    let stranger = Pki::new("stranger");
    let good = pki.server("good", localhost());
    let other_name = pki.server(
        "other",
        ServerCert {
            names: &["other.example"],
            expired: false,
        },
    );
    let expired = pki.server(
        "expired",
        ServerCert {
            names: &["localhost"],
            expired: true,
        },
    );
    let serve = |cert| TlsServing {
        cert,
        client_ca: None,
        http2: false,
    };
    let (good_up, other_up, expired_up) = (
        TlsUpstream::start(serve(&good)).await,
        TlsUpstream::start(serve(&other_name)).await,
        TlsUpstream::start(serve(&expired)).await,
    );
    let (trusted, untrusted) = (trusting(&pki, ""), trusting(&stranger, ""));
    let (_plain, gw) = gateway_for(&[
        ("unknown-ca", &good_up, "", &untrusted),
        ("system-roots", &good_up, "", "server_name: localhost"),
        ("wrong-name", &other_up, "", &trusted),
        ("expired", &expired_up, "", &trusted),
    ])
    .await;
    for (name, reason) in [
        ("unknown-ca", "UnknownIssuer"),
        ("system-roots", "UnknownIssuer"),
        ("wrong-name", "not valid for name"),
        ("expired", "expired"),
    ] {
        let (status, body) = inspect(&gw, name).await;
        assert_eq!(status, 502, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(name), "names the upstream: {message}");
        assert!(
            message.contains(reason),
            "{name}: names `{reason}`: {message}"
        );
    }
    assert!(good_up.seen.lock().unwrap().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn mutual_tls_presents_the_configured_client_certificate() {
    let pki = Pki::new("mtls");
    let cert = pki.server("server", localhost());
    let client_cert = pki.client("gateway", "mcp-oauth-gateway");
    let up = TlsUpstream::start(TlsServing {
        cert: &cert,
        client_ca: Some(&pki),
        http2: false,
    })
    .await;
    let with_cert = trusting(
        &pki,
        &format!(
            ", client_cert_file: {}, client_key_file: {}",
            yaml_path(&client_cert.cert_file),
            yaml_path(&client_cert.key_file)
        ),
    );
    let without = trusting(&pki, "");
    let (_plain, gw) =
        gateway_for(&[("mtls", &up, "", &with_cert), ("anon", &up, "", &without)]).await;
    let (status, seen) = inspect(&gw, "mtls").await;
    assert_eq!(status, 200, "{seen}");
    let (status, refused) = inspect(&gw, "anon").await;
    assert_eq!(
        status, 502,
        "the upstream requires a certificate: {refused}"
    );
    assert_eq!(
        up.seen.lock().unwrap().len(),
        1,
        "only the mTLS call arrived"
    );
}

#[tokio::test]
async fn insecure_skip_verify_reaches_an_unverifiable_upstream() {
    let stranger = Pki::new("insecure");
    let cert = stranger.server(
        "server",
        ServerCert {
            names: &["elsewhere.example"],
            expired: false,
        },
    );
    let up = TlsUpstream::start(TlsServing {
        cert: &cert,
        client_ca: None,
        http2: false,
    })
    .await;
    let (_plain, gw) = gateway_for(&[("insecure", &up, "", "insecure_skip_verify: true")]).await;
    let (status, seen) = inspect(&gw, "insecure").await;
    assert_eq!(status, 200, "{seen}");
}
