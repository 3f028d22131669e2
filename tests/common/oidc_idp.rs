//! A real OpenID Provider for the federation tests: `oidc-provider` (npm,
//! the certified library), run by `tests/clients/oidc_idp.mjs` with the
//! clients and accounts a test gives it; killed on drop.

use super::e2e::{clients_dir, ensure_setup, node22};
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

pub struct OidcIdp {
    pub issuer: String,
    child: tokio::process::Child,
    config: std::path::PathBuf,
}

impl OidcIdp {
    /// Starts it with `config` (`clients`, `accounts`; see the script).
    pub async fn start(config: Value) -> Self {
        ensure_setup();
        let file = std::env::temp_dir().join(format!(
            "mcpgw-idp-{}-{}.json",
            std::process::id(),
            super::free_port()
        ));
        std::fs::write(&file, config.to_string()).unwrap();
        let mut child = tokio::process::Command::new(node22())
            .arg(clients_dir().join("oidc_idp.mjs"))
            .arg(&file)
            .current_dir(clients_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs tests/clients/oidc_idp.mjs");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(60),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the IdP announces itself within 60 s")
        .unwrap();
        let ready: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("the IdP printed {line:?}: {e}"));
        Self {
            issuer: ready["issuer"].as_str().unwrap().to_owned(),
            child,
            config: file,
        }
    }

    /// Calls its control channel: `method` `path` under `/_control`.
    pub async fn control(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .request(method, format!("{}/_control{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// Stops it (the provider is down from now on).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for OidcIdp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}
