//! Command line of mcp-oauth-gateway: parse arguments, hand over to the library.

use clap::{Parser, Subcommand};
use mcp_oauth_gateway::authserver::{self, passwords};
use mcp_oauth_gateway::config::Config;
use mcp_oauth_gateway::{demo, proxy, telemetry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// OAuth 2.1 gateway for MCP servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        /// Path of the YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file and print what it sets up.
    CheckConfig {
        /// Path of the YAML configuration.
        file: PathBuf,
    },
    /// Run the gateway and its authorization server in front of the built-in
    /// demo MCP server.
    Demo {
        /// Address for the gateway to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Print the argon2id hash of a password read from standard input, for
    /// `authorization_server.users[].password_hash`.
    HashPassword,
    /// Manage the authorization server's signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Add a new signing key: published at once, signing after 10 minutes;
    /// the old key stays published until its tokens have expired.
    Rotate {
        /// Path of the YAML configuration (for `authorization_server.data_dir`).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { config } => match Config::load(&config) {
            Ok(config) => serve(config, None),
            Err(errors) => report_config_errors(&config, &errors),
        },
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!("{}: OK\n{}", file.display(), config.summary());
                ExitCode::SUCCESS
            }
            Err(errors) => report_config_errors(&file, &errors),
        },
        Command::Demo { listen } => {
            let upstream = match demo::spawn_on_loopback() {
                Ok(addr) => addr,
                Err(e) => return fail(&format!("cannot start the demo MCP server: {e}")),
            };
            let password = authserver::random_token(12);
            let hash = match passwords::hash_password(&password) {
                Ok(h) => h,
                Err(e) => return fail(&format!("cannot hash the demo password: {e}")),
            };
            let data_dir = std::env::temp_dir().join("mcp-oauth-gateway-demo");
            match demo::gateway_config(listen, upstream, &hash, &data_dir) {
                Ok(config) => {
                    println!(
                        "Log in as `demo` with password `{password}` (scopes mcp, math, time)."
                    );
                    println!("Store: {}", data_dir.join("gateway.db").display());
                    serve(config, Some(upstream))
                }
                Err(errors) => fail(&format!("embedded demo config is invalid:\n{errors}")),
            }
        }
        Command::Keys {
            action: KeysAction::Rotate { config },
        } => {
            match Config::load(&config) {
                Ok(c) => match authserver::rotate_key(&c) {
                    Ok(kid) => {
                        println!("added signing key {kid}: published within a minute, signing in 10 minutes");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e.to_string()),
                },
                Err(errors) => report_config_errors(&config, &errors),
            }
        }
        Command::HashPassword => {
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() || password.trim_end().is_empty()
            {
                return fail("write the password on standard input, e.g. `read -rs P; echo \"$P\" | mcp-oauth-gateway hash-password`");
            }
            match passwords::hash_password(password.trim_end_matches(['\r', '\n'])) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("cannot hash: {e}")),
            }
        }
    }
}

fn serve(config: Config, demo_upstream: Option<SocketAddr>) -> ExitCode {
    telemetry::init(config.log_format, &config.log_level);
    let in_flight = proxy::InFlight::new();
    let server = match proxy::build_server(&config, in_flight.clone()) {
        Ok(s) => s,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    for up in &config.upstreams {
        tracing::info!(upstream = %up.name, public = %config.public_url.join(&up.path), target = %up.target.url, "route");
    }
    for w in &config.warnings {
        tracing::warn!(path = %w.path, hint = %w.hint, "config: {}", w.message);
    }
    if config.auth.is_none() {
        tracing::warn!("authentication is DISABLED: every upstream is open to anyone who can reach the gateway");
    }
    if let Some(addr) = demo_upstream {
        let url = config.public_url.join(&config.upstreams[0].path);
        println!(
            "Demo MCP server (echo, add, get_time, countdown) on http://{addr}{}",
            demo::MCP_PATH
        );
        println!("Connect your MCP client to: {url}");
        println!(
            "  it gets a 401, registers itself and sends you to the login page (OAuth 2.1 + PKCE)"
        );
    }
    tracing::info!(listen = %config.listen, "gateway starting");
    proxy::run_until_terminated(server, in_flight)
}

fn report_config_errors(
    path: &std::path::Path,
    errors: &mcp_oauth_gateway::config::ConfigErrors,
) -> ExitCode {
    eprintln!("{}: {} error(s)\n{errors}", path.display(), errors.0.len());
    ExitCode::FAILURE
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
