//! mcp-oauth-gateway: OAuth 2.1 in front of existing MCP servers.
//!
//! The proxy core (`proxy`) is a pingora `ProxyHttp` that routes MCP
//! Streamable HTTP traffic to the upstreams in the YAML configuration
//! (`config`), reading every POST body once (`mcp`) before forwarding it
//! unchanged. `demo` is the built-in MCP server used by `mcp-oauth-gateway
//! demo` and the tests. See DESIGN.md for the modules still to come (`auth`,
//! `authserver`, `store`, `metrics`).

pub mod auth;
pub mod authserver;
pub mod config;
pub mod demo;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod store;
pub mod telemetry;
