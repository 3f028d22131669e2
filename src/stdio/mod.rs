//! Stdio upstreams: MCP servers that are local programs reading JSON-RPC
//! on stdin and writing it on stdout, one message per line.
//!
//! The proxy speaks Streamable HTTP to clients exactly as for an HTTP
//! upstream (the same token, policy, `tools/list` filter, metrics and
//! audit); only "forward" differs. Here, a [`StdioPool`] per upstream owns
//! the child processes: it starts them on an `initialize` (within the
//! startup timeout, at most `max_processes` at once, backing off after
//! failed starts), gives each MCP session its process by the isolation
//! mode, and stops them on DELETE, when idle, on a reload that changes the
//! upstream, and when the gateway exits (SIGTERM to the process group,
//! SIGKILL after a grace period).
//!
//! One process may serve several sessions (`per_subject`, `shared`), so
//! the bridge gives every request it writes to a process an id of its own
//! (and uses it as the request's progress token) and maps the answer back;
//! requests the process sends (sampling, elicitation, roots, ping) get one
//! too, so that only the client they were sent to can answer them. Where a
//! message from the process goes:
//! - an answer: to the POST that asked;
//! - a progress notification: to the POST whose request it names, under
//!   the client's own token; one naming no call in flight is dropped;
//! - any other request or notification: while calls are in flight as
//!   event streams, to the newest of them (what a process says during a
//!   call is about that call), else to the sessions' GET streams; but only
//!   while the process serves a single subject (always so for
//!   `per_session` and `per_subject`). Such a message names no caller, so
//!   on a process shared by several users nothing tells whose it is: a
//!   request is then answered with an error at once (as is one nobody can
//!   receive, so the process does not wait), and a notification dropped,
//!   except `…/list_changed`, which is news for everyone.
//!
//! Nothing the process writes waits for a client: a client that does not
//! read its stream loses what does not fit in its queue of 64 messages (a
//! GET stream is closed), and the others go on being served.
//!
//! A stateless (2026-07-28) caller has no session: its requests go to its
//! subject's process (or the shared one) under a standing the bridge keeps
//! per subject, so that callers of a shared process cannot answer or
//! cancel each other's requests.

mod message;
mod pool;
mod process;
mod session;
mod traffic;

pub use message::{Message, MessageError};
pub use pool::{StdioError, StdioPool};
pub use process::{stop_all_now, terminate_all};
pub use session::{Exchange, Session};
