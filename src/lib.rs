//! mcp-oauth-gateway: OAuth 2.1 in front of existing MCP servers.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | `proxy` | the pingora `ProxyHttp`: connection limits (`connections`), path rules, routing, header rules, body reads, POST forwarding (`forward`), the one response path both forwarding ways share (`response`), the in-process bridge to the AS (`as_bridge`), the one error-to-response map (`error`), its listening service and the SIGTERM drain (`lifecycle`) |
//! | `mcp` | reading JSON-RPC bodies strictly (`strict_json`), methods, tool names, `Mcp-Method`/`Mcp-Name` checks, `tools/list` filtering |
//! | `auth` | verifying bearer tokens (JWT against JWKS in `jwt`/`jwks`, RFC 7662 in `introspection`), the verdict cache, `WWW-Authenticate` challenges (`challenge`), PRM documents (`prm`), `Mcp-Session-Id`s sealed to their creator (`sessions`) |
//! | `policy` | which scopes a message needs (a leaf: depends on nothing of the gateway); its tool-name glob in `policy::glob` |
//! | `authserver` | the built-in OAuth 2.1 authorization server, an axum `Router` split by concept (registration, authorize, login, consent, flows and codes, throttling, token, the refresh reuse grace window, revocation, introspection, keys, discovery), and `federation`: sign-in through identity providers (the OIDC relying party in `federation::oidc`, the access rules in `federation::rules`) |
//! | `store` | the AS's durable state, one trait per concept (keys, clients, grants, consents, people, codes, short-lived states and counters) that a backend implements: SQLite (default), PostgreSQL (shared by replicas) and memory |
//! | `config` | the YAML schema (`raw`), every structural error in one pass (`structure`), validation into typed settings |
//! | `ratelimit` | token buckets (a leaf); what they count is `proxy::rate_limit` |
//! | `identity` | caller identity for upstreams: header values, the gateway's identity key and JWKS, signed assertions |
//! | `stdio` | stdio upstreams: the child processes of each (`process`: no shell, listed environment, own process group), their sessions and isolation modes (`pool`, `session`), where a process's messages go (`traffic`), and the id mapping that lets several clients share one process (`message`) |
//! | `tls` | TLS material for `https://` upstreams |
//! | `reload` | live configuration reloads (SIGHUP, file changes): validate, keep what needs a restart, swap `proxy::Live` and the AS settings; it also runs the JWKS refresh of the current token sources |
//! | `metrics`, `telemetry` | every Prometheus metric, defined once; logging and the audit event |
//! | `server` | the composition root: the authorization server, the proxy, the background jobs and the listeners, built in one place |
//! | `demo` | the built-in MCP server of `mcp-oauth-gateway demo` and the tests |
//!
//! # The life of a request
//!
//! `proxy::connections` admits the connection (per-address cap) and times
//! its request heads; pingora parses the head; `Gateway::request_filter`
//! checks size and path, answers PRM and AS paths itself, finds the route,
//! checks `Origin`, authenticates the token (`auth`), and for a POST reads
//! the body, parses it (`mcp`), checks it against the policy (`policy`) and
//! forwards it (`proxy::forward`); GET and DELETE go through pingora's own
//! loop. A stdio upstream's requests, all three methods, go to
//! `proxy::stdio`, which writes them to its processes (`stdio`). Either way the upstream's answer goes back through
//! `proxy::response` (header rules, `X-Request-Id`, the `tools/list`
//! filter). Every refusal becomes one response in `proxy::error`.
//!
//! # The life of a token
//!
//! The AS (`authserver`) issues ES256 (or EdDSA, RS256) JWTs signed with keys
//! from the `store`; the proxy verifies them like any issuer's
//! (`auth::Authenticator`), reading the AS's keys and revocations in process
//! (`auth::local`). A verified token is cached by its SHA-256 until it
//! expires; a revocation counts on the next use.
//!
//! # Where to change
//!
//! - a 403 message or challenge: `auth/challenge.rs` (`Refusal::for_denial`);
//! - a token source: `auth/mod.rs` (`Authenticator::verify_uncached`) next to
//!   `auth/jwt.rs` and `auth/introspection.rs`;
//! - a grant type: a variant of `GrantType` in `authserver/grant.rs`, its
//!   handler in `authserver/token.rs`, its registration rules in
//!   `authserver/registration.rs`;
//! - a store backend: `store/mod.rs` (the traits `KeyStore`,
//!   `ClientStore`, `GrantStore`, `ConsentStore`, and `store::open`, which
//!   picks the backend), beside `store/sqlite.rs` (its schema in
//!   `store/migrations/sqlite/*.sql`) and `store/memory.rs`;
//! - an upstream kind: `config::Target`, `proxy/route.rs` (`Backend`: where
//!   an upstream becomes a peer or a process pool), and the step that
//!   reaches it: `proxy/forward.rs` (HTTP) or `proxy/stdio.rs` (stdio);
//! - a metric: `metrics.rs`.

/// Every binary built on this crate (the gateway, the bench stack, the
/// tests) allocates with mimalloc: with glibc's allocator, malloc and free
/// took about 15 % of the CPU of a proxied `tools/call` (perf, issue 17).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod auth;
pub mod authserver;
pub mod config;
pub mod demo;
pub mod identity;
pub mod mcp;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod reload;
pub mod server;
pub mod stdio;
pub mod store;
pub mod telemetry;
pub mod tls;
