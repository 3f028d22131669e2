//! The benchmark stack of `bench/run.sh`, in one process so that its CPU
//! time covers everything: the demo MCP upstream, a JWKS issuer, and two
//! gateways in front of the same upstream, one without auth and one
//! verifying ES256 JWTs with a per-tool policy. Prints the URLs and a valid
//! token, then serves until killed.
//!
//!   cargo run --release --example bench_stack -- <unauth-port> <auth-port>

use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_oauth_gateway::config::Config;
use mcp_oauth_gateway::{demo, proxy};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use serde_json::json;
use std::time::{SystemTime, UNIX_EPOCH};

struct Never;

#[async_trait::async_trait]
impl ShutdownSignalWatch for Never {
    async fn recv(&self) -> ShutdownSignal {
        std::future::pending().await
    }
}

fn start_gateway(yaml: &str) {
    let config = Config::from_yaml(yaml).expect("bench config is valid");
    let server =
        mcp_oauth_gateway::server::build(&config, proxy::InFlight::new()).expect("gateway builds");
    std::thread::spawn(move || {
        server.run(RunArgs {
            shutdown_signal: Box::new(Never),
        })
    });
}

fn main() {
    let args: Vec<u16> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("ports are numbers"))
        .collect();
    let [open_port, auth_port] = args[..] else {
        panic!("usage: bench_stack <unauth-port> <auth-port>")
    };
    let upstream = demo::spawn_on_loopback().expect("demo upstream starts");

    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/ec1.pem"
    ))
    .expect("fixture key");
    let key = EncodingKey::from_ec_pem(&pem).expect("EC key");
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
    jwk["kid"] = json!("bench");
    let idp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    idp.set_nonblocking(true).unwrap();
    let issuer = format!("http://{}", idp.local_addr().unwrap());
    let doc = json!({"keys": [jwk]});
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let app = Router::new().route("/jwks.json", get(move || async move { Json(doc) }));
                let listener = tokio::net::TcpListener::from_std(idp).unwrap();
                axum::serve(listener, app).await.unwrap();
            })
    });

    let common = |port: u16| {
        format!(
            "public_url: http://127.0.0.1:{port}\nlisten: 127.0.0.1:{port}\nserver: {{ worker_threads: 2 }}\nlogging: {{ level: warn }}\n"
        )
    };
    start_gateway(&format!(
        "{}auth: {{ disabled: true }}\nupstreams:\n  - {{ name: demo, path: /demo/mcp, url: 'http://{upstream}/mcp' }}\n",
        common(open_port)
    ));
    start_gateway(&format!(
        "{}auth:
  jwt_issuers:
    - {{ issuer: '{issuer}', jwks_uri: '{issuer}/jwks.json', algorithms: [ES256] }}
upstreams:
  - name: demo
    path: /demo/mcp
    url: http://{upstream}/mcp
    policy:
      base_scopes: [mcp]
      tools: {{ add: [math], 'get_*': [time], echo: [], countdown: [] }}
",
        common(auth_port)
    ));

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": issuer, "sub": "bench", "aud": format!("http://127.0.0.1:{auth_port}/demo/mcp"),
        "scope": "mcp math", "client_id": "wrk", "iat": now, "exp": now + 3600, "jti": "bench-1"
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("bench".into());
    let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    println!("UPSTREAM=http://{upstream}{}", demo::MCP_PATH);
    println!("TOKEN={token}");
    println!("READY");
    loop {
        std::thread::park();
    }
}
