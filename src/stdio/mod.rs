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
//! and maps the answer back; requests the process sends (sampling,
//! elicitation, roots, ping) get one too, so that only the session they
//! were sent to can answer them. Where a message from the process goes:
//! - an answer: to the POST that asked;
//! - a progress notification: to the POST whose request carried its
//!   `progressToken`;
//! - any other request or notification: to the newest POST of the session
//!   still open as an event stream (what a process says while a call is in
//!   flight is about that call), else to the session's GET stream; a
//!   request nobody can receive is answered with an error at once, so the
//!   process does not wait for it. With a shared process, notifications go
//!   to every session, requests to the session with the newest open POST.

mod message;
mod pool;
mod process;

pub use message::{Message, MessageError};
pub use pool::{Exchange, Session, StdioError, StdioPool};
pub use process::stop_all_now;
