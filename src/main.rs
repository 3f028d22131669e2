//! Command line of mcp-oauth-gateway: parse arguments, hand over to the library.

use clap::{Parser, Subcommand};
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
    /// Run the gateway in front of the built-in demo MCP server.
    Demo {
        /// Address for the gateway to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
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
            match demo::gateway_config(listen, upstream) {
                Ok(config) => serve(config, Some(upstream)),
                Err(errors) => fail(&format!("embedded demo config is invalid:\n{errors}")),
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
        println!("  e.g. npx @modelcontextprotocol/inspector --cli {url} --transport http --method tools/list");
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
