//! Command line of mcp-oauth-gateway: parse arguments, hand over to the library.

use clap::{Parser, Subcommand};
use mcp_oauth_gateway::authserver::{self, passwords};
use mcp_oauth_gateway::config::Config;
use mcp_oauth_gateway::{demo, proxy, server, telemetry};
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
        /// `host:port` for the gateway; the host is kept in every URL it
        /// prints and publishes (`localhost:8080` and `127.0.0.1:8080` are
        /// different URLs to an MCP client).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Address for `/metrics` [default: 127.0.0.1:9464, or a free port
        /// when that one is taken].
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Directory of the demo's SQLite store [default: a directory per
        /// listen port under the system's temporary directory].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the argon2id hash of a password read from standard input, for
    /// `authorization_server.users[].password_hash`.
    HashPassword,
    /// Apply the store's schema migrations and exit (a gateway applies them
    /// at start too; this is for rolling upgrades that migrate first).
    Migrate {
        /// Path of the YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
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
        Command::Demo {
            listen,
            metrics_listen,
            data_dir,
        } => demo(&listen, metrics_listen, data_dir),
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
        Command::Migrate { config } => match Config::load(&config) {
            Ok(c) => match authserver::migrate_store(&c) {
                Ok(version) => {
                    println!("the store's schema is at version {version}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            },
            Err(errors) => report_config_errors(&config, &errors),
        },
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

/// `demo`: the demo MCP server, and the gateway in front of it.
fn demo(listen: &str, metrics_listen: Option<SocketAddr>, data_dir: Option<PathBuf>) -> ExitCode {
    let Some(addr) = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .ok()
        .and_then(|mut addrs| addrs.next())
    else {
        return fail(&format!(
            "--listen `{listen}` is not a host:port this machine can listen on (e.g. 127.0.0.1:8080 or localhost:8080)"
        ));
    };
    let upstream = match demo::spawn_on_loopback() {
        Ok(addr) => addr,
        Err(e) => return fail(&format!("cannot start the demo MCP server: {e}")),
    };
    let password = authserver::random_token(12);
    let hash = match passwords::hash_password(&password) {
        Ok(h) => h,
        Err(e) => return fail(&format!("cannot hash the demo password: {e}")),
    };
    let metrics_listen = metrics_listen.unwrap_or_else(default_metrics_listen);
    let data_dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("mcp-oauth-gateway-demo-{}", addr.port()))
    });
    let settings = demo::DemoSettings {
        public_authority: listen,
        listen: addr,
        upstream,
        password_hash: &hash,
        data_dir: &data_dir,
        metrics_listen,
    };
    match demo::gateway_config(&settings) {
        Ok(config) => {
            println!("Log in as `demo` with password `{password}` (scopes mcp, math, time).");
            println!("Store:   {}", data_dir.join("gateway.db").display());
            println!("Metrics: http://{metrics_listen}/metrics");
            serve(config, Some(upstream))
        }
        Err(errors) => fail(&format!("embedded demo config is invalid:\n{errors}")),
    }
}

/// 127.0.0.1:9464 (Prometheus's usual exporter port) when free, else any
/// free port, so that a second `demo` still serves metrics.
fn default_metrics_listen() -> SocketAddr {
    let usual: SocketAddr = ([127, 0, 0, 1], 9464).into();
    std::net::TcpListener::bind(usual)
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .and_then(|l| l.local_addr())
        .unwrap_or(usual)
}

fn serve(config: Config, demo_upstream: Option<SocketAddr>) -> ExitCode {
    telemetry::init(config.log_format, &config.log_level);
    let in_flight = proxy::InFlight::new();
    let server = match server::build(&config, in_flight.clone()) {
        Ok(s) => s,
        Err(e) => {
            telemetry::flush_logs();
            return fail(&format!("cannot start: {e}"));
        }
    };
    for up in &config.upstreams {
        tracing::info!(upstream = %up.name, public = %config.public_url.join(&up.path), target = %up.target.describe(), "route");
    }
    for w in &config.warnings {
        tracing::warn!(path = %w.path, hint = %w.hint, "config: {}", w.message);
    }
    if config.auth.is_none() {
        tracing::warn!("authentication is DISABLED: every upstream is open to anyone who can reach the gateway");
    }
    if let Some(a) = &config.authorization_server {
        tracing::info!(data_dir = %a.data_dir.display(), "authorization server store");
    }
    if let Some(addr) = demo_upstream {
        println!(
            "Demo MCP server (echo, add, get_time, countdown) on http://{addr}{}",
            demo::MCP_PATH
        );
    }
    // Clients compare URLs byte for byte: print exactly the ones to use.
    for up in &config.upstreams {
        println!(
            "Connect your MCP client to: {}",
            config.public_url.join(&up.path)
        );
    }
    if demo_upstream.is_some() {
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
