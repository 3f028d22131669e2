//! The command line: `check-config`, and `serve` stopping on SIGTERM.

mod common;

use common::*;
use futures_util::StreamExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-oauth-gateway");

/// A config file in the target directory, removed on drop.
struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    fn with(text: &str) -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = dir.join(format!(
            "config-{}-{}.yaml",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn check_config(file: &ConfigFile) -> std::process::Output {
    Command::new(BIN)
        .arg("check-config")
        .arg(&file.0)
        .output()
        .unwrap()
}

#[test]
fn check_config_prints_routes_of_a_valid_file() {
    let file = ConfigFile::with(&config_yaml(
        8080,
        "127.0.0.1:3001".parse().unwrap(),
        "",
        "",
    ));
    let out = check_config(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("http://127.0.0.1:8080/demo/mcp -> http://127.0.0.1:3001/mcp"),
        "{stdout}"
    );
    assert!(stdout.contains("raw"), "{stdout}");
}

#[test]
fn check_config_lists_every_error_with_its_path_and_exits_1() {
    let file = ConfigFile::with(
        "public_url: nope\nupstreams:\n  - { name: a, path: x, url: 'http://h', retries: 1 }\n",
    );
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstreams[0].retries: unknown field"),
        "{stderr}"
    );

    let file = ConfigFile::with(
        "public_url: nope\nupstreams:\n  - { name: a, path: x, url: 'http://h' }\n",
    );
    let out = check_config(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("public_url:")
            && stderr.contains("upstreams[0].path:")
            && stderr.contains("hint:"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_unknown_scopes_as_errors_and_unreachable_rules_as_warnings() {
    let protected = "public_url: https://mcp.example.com
auth:
  jwt_issuers: [{ issuer: 'https://idp.example.com' }]
upstreams:
  - name: a
    path: /a/mcp
    url: http://127.0.0.1:3001/mcp
    scopes: [mcp, admin]
    policy:
      base_scopes: [mcp]
      tools: { 'admin_*': [admin], 'admin_**': [admin], '*': [mcp] }
      unlisted_tools: deny
";
    let file = ConfigFile::with(protected);
    let out = check_config(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: upstreams[0].policy.tools.admin_**: unreachable: every tool it matches is matched first by `admin_*`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: upstreams[0].policy.unlisted_tools: unreachable"),
        "{stdout}"
    );

    let file = ConfigFile::with(&protected.replace("'admin_*': [admin]", "'admin_*': [admni]"));
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "upstreams[0].policy.tools.admin_*: scope `admni` is not in the upstream's `scopes`"
        ),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_a_missing_file() {
    let out = Command::new(BIN)
        .args(["check-config", "/nonexistent/gateway.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

/// SIGTERM: the listener closes at once, an SSE stream in flight runs to its
/// end, and the process then exits 0 well before the grace period is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_then_exits_zero() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let file = ConfigFile::with(&config_yaml(
        port,
        upstream.addr,
        "",
        "server:\n  shutdown_grace_period: 30s",
    ));
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for_port(addr).await;

    let c = client();
    let resp = stateless_countdown(&c, &format!("http://{addr}/demo/mcp"), 4, 300).await;
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());

    let signalled = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still accepts after SIGTERM"
    );

    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = stream.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.contains("counted down 4 steps"),
        "stream was cut: {rest}"
    );

    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(25),
        "waited for the whole grace period"
    );
}

#[test]
fn shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml");
    let out = Command::new(BIN)
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `demo`, killed on drop; its stdout lines as they come.
struct Demo {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("demo")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// The first printed line starting with `prefix`, without it.
    fn printed(&self, prefix: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("demo never printed `{prefix}`"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 11.7: two demos side by side each serve metrics (the second on a
/// free port) and keep their own store; each prints the exact URL to use,
/// with the host as given (`localhost` stays `localhost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demos_run_side_by_side_and_print_the_urls_to_use() {
    let (p1, p2) = (free_port(), free_port());
    let first = Demo::start(&["--listen", &format!("127.0.0.1:{p1}")]);
    let first_store = first.printed("Store:");
    let first_metrics = first.printed("Metrics:");
    assert_eq!(
        first.printed("Connect your MCP client to:"),
        format!("http://127.0.0.1:{p1}/demo/mcp")
    );
    let second = Demo::start(&["--listen", &format!("localhost:{p2}")]);
    let second_store = second.printed("Store:");
    let second_metrics = second.printed("Metrics:");
    let url = second.printed("Connect your MCP client to:");
    assert_eq!(url, format!("http://localhost:{p2}/demo/mcp"));
    assert_ne!(first_metrics, second_metrics);
    assert_ne!(first_store, second_store);
    for metrics in [&first_metrics, &second_metrics] {
        let text = get_text(metrics).await;
        assert!(text.contains("mcpgw_build_info"), "{metrics}: {text}");
    }
    let prm_url = format!("http://localhost:{p2}/.well-known/oauth-protected-resource/demo/mcp");
    let prm: serde_json::Value = serde_json::from_str(&get_text(&prm_url).await).unwrap();
    assert_eq!(prm["resource"], url.as_str());
}

/// Issue 11.7: a relative `data_dir` is relative to the configuration
/// file, wherever the command runs.
#[test]
fn relative_data_dir_resolves_against_the_config_file() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "relative-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        "public_url: http://127.0.0.1:8080
authorization_server:
  data_dir: ./store
upstreams:
  - { name: a, path: /a/mcp, url: 'http://127.0.0.1:3001/mcp', scopes: [mcp] }
",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["keys", "rotate", "--config"])
        .arg(&config)
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.join("store/gateway.db").exists(),
        "store not next to the config file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11.7: `serve` with the shipped example (on free ports, store next
/// to the copied file) starts without a warning or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_serves_without_warnings() {
    let (port, metrics_port) = (free_port(), free_port());
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.yaml"))
            .unwrap()
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:9464", &format!("127.0.0.1:{metrics_port}"));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("example-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, example).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
    // The first JWKS fetch and the store open happen at start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("WARN") && !log.contains("ERROR"),
        "the example should run clean:\n{log}"
    );
    assert!(dir.join("data/gateway.db").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Log lines leave through a writer thread: the last ones before the
/// process exits (after SIGTERM's drain, and after SIGINT) are still
/// written, not left in its queue.
#[tokio::test]
async fn the_last_log_lines_before_an_exit_are_written() {
    let upstream = Upstream::start().await;
    for (signal, last_line) in [
        ("-TERM", "all in-flight requests finished; exiting"),
        ("-INT", "gateway stopped"),
    ] {
        let port = free_port();
        let file = ConfigFile::with(&config_yaml(port, upstream.addr, "", ""));
        let log = file.0.with_extension("log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&file.0)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(format!("127.0.0.1:{port}").parse().unwrap()).await;
        assert!(Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let mut child = child;
        let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert_eq!(status.code(), Some(0), "{signal}");
        let written = std::fs::read_to_string(&log).unwrap();
        let _ = std::fs::remove_file(&log);
        assert!(
            written.contains(last_line),
            "{signal}: the last line is missing:\n{written}"
        );
    }
}
