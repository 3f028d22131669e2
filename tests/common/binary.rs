//! The gateway binary itself, serving a config file on a port of its own
//! (its own process: own metrics, own threads, own limits).

use super::{free_port, wait_for_port};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-oauth-gateway");

/// The gateway binary, serving a config file, killed on drop.
pub struct Binary {
    child: Child,
    config: std::path::PathBuf,
    /// Its log (stderr at `RUST_LOG=warn`), unless `MCPGW_TEST_LOG` shows it.
    log: std::path::PathBuf,
    pub addr: std::net::SocketAddr,
}

impl Binary {
    pub async fn serve(yaml: &str, port: u16) -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let config = dir.join(format!("gateway-{}-{port}.yaml", std::process::id()));
        std::fs::write(&config, yaml).unwrap();
        let log_file = dir.join(format!("gateway-{}-{port}.log", std::process::id()));
        // MCPGW_TEST_LOG=<filter> shows the binary's log (e.g. `debug`).
        let filter = std::env::var("MCPGW_TEST_LOG").ok();
        let log = if filter.is_some() {
            Stdio::inherit()
        } else {
            Stdio::from(std::fs::File::create(&log_file).unwrap())
        };
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", filter.as_deref().unwrap_or("warn"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for_port(addr).await;
        Self {
            child,
            config,
            log: log_file,
            addr,
        }
    }

    /// Replaces its configuration file with `yaml`.
    pub fn rewrite(&self, yaml: &str) {
        // Written aside and renamed, as deployment tools do: the gateway
        // never reads half a file.
        let next = self.config.with_extension("next");
        std::fs::write(&next, yaml).unwrap();
        std::fs::rename(&next, &self.config).unwrap();
    }

    /// Sends it `signal` (`HUP`, `TERM`...).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// What it has logged so far (empty under `MCPGW_TEST_LOG`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Binary {
    /// Serves `yaml` (a config without a `metrics` section) on `port` with
    /// a metrics listener of its own; returns it and the metrics port.
    pub async fn serve_with_metrics(yaml: &str, port: u16) -> (Self, u16) {
        let metrics_port = free_port();
        let yaml = format!("{yaml}metrics: {{ listen: '127.0.0.1:{metrics_port}' }}\n");
        let gw = Self::serve(&yaml, port).await;
        wait_for_port(format!("127.0.0.1:{metrics_port}").parse().unwrap()).await;
        (gw, metrics_port)
    }
}
