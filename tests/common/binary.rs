//! The gateway binary itself, serving a config file on a port of its own
//! (its own process: own metrics, own threads, own limits).

use super::{free_port, wait_for_port};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_mcp-oauth-gateway");

/// The gateway binary, serving a config file, killed on drop.
pub struct Binary {
    child: Child,
    config: std::path::PathBuf,
    pub addr: std::net::SocketAddr,
}

impl Binary {
    pub async fn serve(yaml: &str, port: u16) -> Self {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let config = dir.join(format!("gateway-{}-{port}.yaml", std::process::id()));
        std::fs::write(&config, yaml).unwrap();
        // MCPGW_TEST_LOG=<filter> shows the binary's log (e.g. `debug`).
        let filter = std::env::var("MCPGW_TEST_LOG").ok();
        let log = if filter.is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
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
            addr,
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
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
