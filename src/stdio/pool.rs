//! The processes of one stdio upstream and the MCP sessions on them: which
//! process a session goes to, starting processes (within the limit, the
//! startup timeout and the backoff), and ending them and their sessions.

use super::message::{self, Message};
use super::process::{Child, Line, Lines};
use super::session::Session;
use super::traffic::{lock, Party, Process};
use crate::auth::Principal;
use crate::config::{Isolation, StdioCommand};
use crate::metrics::metrics;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The protocol revision of the bridge's own `initialize` for stateless
/// clients: the newest one with `initialize` (a stdio server answers with
/// the revision it speaks).
const STATELESS_PROTOCOL_VERSION: &str = "2025-11-25";

/// A caller's subject, qualified by its issuer; empty for no caller.
fn subject_key(caller: Option<&Principal>) -> String {
    caller.map_or_else(String::new, |p| format!("{}\n{}", p.issuer, p.subject))
}

/// Why a stdio upstream could not take a request.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// `max_processes` are running.
    #[error("upstream `{upstream}` runs its limit of {limit} processes; retry later")]
    Busy {
        /// Upstream name.
        upstream: String,
        /// The configured limit.
        limit: usize,
        /// When to try again.
        retry_after: Duration,
    },
    /// Recent starts for this caller failed; the next is not tried before
    /// `retry_after`.
    #[error("upstream `{upstream}` failed to start {failures} time(s) in a row; retry later")]
    BackingOff {
        /// Upstream name.
        upstream: String,
        /// Failed starts in a row.
        failures: u32,
        /// When the next start is allowed.
        retry_after: Duration,
    },
    /// The program could not be started, or exited before answering
    /// `initialize`.
    #[error("upstream `{upstream}` could not be started: {detail}")]
    StartFailed {
        /// Upstream name.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// The program did not answer `initialize` in time.
    #[error("upstream `{upstream}` did not answer `initialize` within {timeout:?}")]
    StartTimeout {
        /// Upstream name.
        upstream: String,
        /// The configured startup timeout.
        timeout: Duration,
    },
    /// The session's process has exited (or the session was ended).
    #[error("the session has ended")]
    SessionGone,
    /// A GET stream is open on the session already.
    #[error("a GET stream is already open for this session")]
    StreamOpen,
    /// The process did not read a request within the response timeout; it
    /// is being stopped.
    #[error("upstream `{upstream}` did not read the request within {timeout:?}")]
    Stuck {
        /// Upstream name.
        upstream: String,
        /// The configured response timeout.
        timeout: Duration,
    },
}

/// The process of one key, behind the lock its first start holds.
type KeyedProcess = Arc<tokio::sync::Mutex<Option<Arc<Process>>>>;

/// The child processes of one stdio upstream, and its MCP sessions.
pub struct StdioPool {
    name: String,
    spec: StdioCommand,
    me: Weak<StdioPool>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// `per_subject`, `shared` and stateless callers: the process of each
    /// key, started once.
    keyed: Mutex<HashMap<String, KeyedProcess>>,
    /// Every process started and not yet exited.
    running: Mutex<Vec<Weak<Process>>>,
    /// Stateless callers' standing on their processes, by subject.
    stateless: Mutex<HashMap<String, Arc<Session>>>,
    slots: Arc<Semaphore>,
    /// Failed starts, by the subject whose `initialize` they were for.
    backoff: Mutex<HashMap<String, Backoff>>,
}

/// How long failed starts are remembered: long enough for the doubling to
/// reach its 30 s.
const BACKOFF_MEMORY: Duration = Duration::from_secs(300);

/// Failed starts in a row, and when the last one was.
#[derive(Default)]
struct Backoff {
    failures: u32,
    last: Option<Instant>,
}

impl Backoff {
    /// How long the next start must wait: 1 s after the first failure,
    /// doubling, at most 30 s.
    fn wait(&self) -> Option<Duration> {
        let last = self.last?;
        let exp = self.failures.saturating_sub(1).min(5);
        let wait = Duration::from_secs(1 << exp).min(Duration::from_secs(30));
        wait.checked_sub(last.elapsed()).filter(|d| !d.is_zero())
    }
}

impl StdioPool {
    /// The pool of the upstream `name`; nothing runs until a session starts.
    pub fn new(name: &str, spec: StdioCommand) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            name: name.to_owned(),
            slots: Arc::new(Semaphore::new(spec.max_processes)),
            spec,
            me: me.clone(),
            sessions: Mutex::default(),
            keyed: Mutex::default(),
            running: Mutex::default(),
            stateless: Mutex::default(),
            backoff: Mutex::default(),
        })
    }

    /// Starts a session for `caller` with its `initialize` request: a new
    /// process (`per_session`), or the caller's key's process, started if
    /// it is not running. Returns the answer to `initialize` (with the
    /// client's id) and the session, unless the process refused.
    pub async fn initialize(
        &self,
        caller: Option<&Principal>,
        request: Message,
    ) -> Result<(Option<Arc<Session>>, Bytes), StdioError> {
        let key = match self.spec.isolation {
            Isolation::PerSession => None,
            Isolation::Shared => Some(String::new()),
            Isolation::PerSubject => Some(subject_key(caller)),
        };
        self.open_session(key, caller, request, None).await
    }

    /// The session for a stateless (MCP 2026-07-28) caller, which has no
    /// `initialize` and no `Mcp-Session-Id`: one process per caller (by
    /// issuer and subject; every anonymous caller shares one), or the
    /// shared process, initialized by the bridge itself the first time.
    /// Each subject has a standing of its own on it, so that one caller's
    /// cancellations and answers never reach another's requests.
    pub async fn stateless_session(
        &self,
        caller: Option<&Principal>,
    ) -> Result<Arc<Session>, StdioError> {
        let subject = subject_key(caller);
        let live = lock(&self.stateless)
            .get(&subject)
            .filter(|s| !s.process.has_exited())
            .cloned();
        if let Some(session) = live {
            return Ok(session);
        }
        let key = match self.spec.isolation {
            Isolation::Shared => String::new(),
            _ => format!("stateless\n{subject}"),
        };
        let initialize = Message::parse(
            serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": STATELESS_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "mcp-oauth-gateway", "version": env!("CARGO_PKG_VERSION")}}})
            .to_string()
            .as_bytes(),
        )
        .map_err(|e| StdioError::StartFailed {
            upstream: self.name.clone(),
            detail: e.to_string(),
        })?;
        let party = Party {
            owner: format!("stateless\n{subject}").into(),
            subject: subject.clone().into(),
        };
        let (session, answer) = self
            .open_session(Some(key), caller, initialize, Some(party))
            .await?;
        let Some(session) = session else {
            return Err(StdioError::StartFailed {
                upstream: self.name.clone(),
                detail: format!(
                    "it refused the gateway's `initialize`: {}",
                    String::from_utf8_lossy(&answer)
                ),
            });
        };
        let initialized = Message::notification("notifications/initialized", serde_json::json!({}));
        session
            .send(vec![initialized], false, Duration::from_secs(1))
            .await?;
        lock(&self.stateless).insert(subject, session.clone());
        Ok(session)
    }

    /// A new session on the process of `key` (a new process for `None`):
    /// its own (`party` `None`: a session-based client) or a stateless
    /// caller's standing.
    async fn open_session(
        &self,
        key: Option<String>,
        caller: Option<&Principal>,
        mut request: Message,
        party: Option<Party>,
    ) -> Result<(Option<Arc<Session>>, Bytes), StdioError> {
        let client_id = request.take_id().unwrap_or_else(message::null);
        let stateless = party.is_some();
        let (process, answer) = match key {
            None => {
                let process = self.start(caller, None).await?;
                let answer = self
                    .first_initialize(&process, request, client_id, caller)
                    .await?;
                (process, answer)
            }
            Some(key) => {
                let cell = lock(&self.keyed).entry(key.clone()).or_default().clone();
                let mut slot = cell.lock().await;
                let live = slot.as_ref().filter(|p| !p.has_exited()).cloned();
                match live {
                    Some(process) => {
                        let result = lock(&process.init_result).clone();
                        let answer = match result {
                            Some(result) => Message::response(client_id, Ok(result)).to_bytes(),
                            None => return Err(StdioError::SessionGone),
                        };
                        (process, answer)
                    }
                    None => {
                        let process = self.start(caller, Some(key)).await?;
                        let answer = self
                            .first_initialize(&process, request, client_id, caller)
                            .await?;
                        *slot = Some(process.clone());
                        (process, answer)
                    }
                }
            }
        };
        if lock(&process.init_result).is_none() {
            return Ok((None, answer));
        }
        let id = crate::authserver::random_token(24);
        let party = party.unwrap_or_else(|| Party {
            owner: id.as_str().into(),
            subject: subject_key(caller).into(),
        });
        let session = Arc::new(Session::new(id, party, process.clone()));
        {
            let mut state = lock(&process.state);
            if state.exited {
                return Err(StdioError::SessionGone);
            }
            state.sessions.push(Arc::downgrade(&session));
            state.served.insert(session.party().subject.clone());
        }
        if !stateless {
            lock(&self.sessions).insert(session.id().to_owned(), session.clone());
        }
        Ok((Some(session), answer))
    }

    /// A new process's `initialize`; a start that fails or times out
    /// backs the caller's next start off, one that is answered clears it.
    async fn first_initialize(
        &self,
        process: &Arc<Process>,
        request: Message,
        client_id: Box<RawValue>,
        caller: Option<&Principal>,
    ) -> Result<Bytes, StdioError> {
        let answered = process
            .initialize(request, client_id, self.spec.startup_timeout)
            .await;
        let subject = subject_key(caller);
        match &answered {
            Ok(_) => {
                lock(&self.backoff).remove(&subject);
            }
            Err(_) => self.start_failed(subject),
        }
        answered
    }

    /// The live session of this id.
    pub fn session(&self, id: &str) -> Option<Arc<Session>> {
        let mut sessions = lock(&self.sessions);
        let session = sessions.get(id)?.clone();
        if session.process.has_exited() {
            sessions.remove(id);
            return None;
        }
        Some(session)
    }

    /// Ends a session (its client's DELETE): its GET stream closes, and a
    /// `per_session` process is stopped. `false` when there is no such
    /// session.
    pub fn end_session(&self, id: &str) -> bool {
        let Some(session) = lock(&self.sessions).remove(id) else {
            return false;
        };
        self.detach(&session);
        if session.process.key.is_none() {
            session.process.stop("deleted");
        }
        true
    }

    /// Takes a session off its process: its GET stream closes, and the
    /// process no longer sends it anything.
    fn detach(&self, session: &Arc<Session>) {
        session.close_stream();
        lock(&session.process.state)
            .sessions
            .retain(|s| s.upgrade().is_some_and(|s| !Arc::ptr_eq(&s, session)));
    }

    /// Stops every process of this upstream (a reload that replaced it).
    pub fn stop_all(&self, reason: &'static str) {
        for process in lock(&self.running).iter().filter_map(Weak::upgrade) {
            process.stop(reason);
        }
    }

    /// Processes running now.
    pub fn running(&self) -> usize {
        self.spec.max_processes - self.slots.available_permits()
    }

    /// Starts a process for `key` (`None`: for one session), within the
    /// limit and the caller's backoff.
    async fn start(
        &self,
        caller: Option<&Principal>,
        key: Option<String>,
    ) -> Result<Arc<Process>, StdioError> {
        let backoff = {
            let mut all = lock(&self.backoff);
            all.retain(|_, b| b.last.is_some_and(|t| t.elapsed() < BACKOFF_MEMORY));
            all.get(&subject_key(caller))
                .and_then(|b| Some((b.failures, b.wait()?)))
        };
        if let Some((failures, retry_after)) = backoff {
            return Err(StdioError::BackingOff {
                upstream: self.name.clone(),
                failures,
                retry_after,
            });
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(StdioError::Busy {
                upstream: self.name.clone(),
                limit: self.spec.max_processes,
                retry_after: Duration::from_secs(5),
            });
        };
        let env = self.caller_env(caller, key.is_none());
        let (child, lines) = Child::spawn(&self.spec, &env, &self.name).map_err(|e| {
            self.start_failed(subject_key(caller));
            StdioError::StartFailed {
                upstream: self.name.clone(),
                detail: e.to_string(),
            }
        })?;
        let m = metrics();
        m.stdio_starts.with_label_values(&[&self.name]).inc();
        m.stdio_processes.with_label_values(&[&self.name]).inc();
        tracing::info!(upstream = %self.name, pid = child.pid, isolation = self.spec.isolation.as_str(), "stdio upstream process started");
        let process = Arc::new(Process::new(&self.name, child, key, slot));
        {
            let mut running = lock(&self.running);
            running.retain(|p| p.strong_count() > 0);
            running.push(Arc::downgrade(&process));
        }
        tokio::spawn(read_process(self.me.clone(), process.clone(), lines));
        tokio::spawn(watch_idle(
            self.me.clone(),
            Arc::downgrade(&process),
            self.spec.idle_timeout,
        ));
        Ok(process)
    }

    /// The caller's identity for the child's environment (`caller_env`):
    /// the subject and issuer, and for the process of one session (the
    /// only one whose client is known for its whole life) the client and
    /// its scopes.
    fn caller_env(
        &self,
        caller: Option<&Principal>,
        one_session: bool,
    ) -> Vec<(&'static str, String)> {
        let Some(p) = caller.filter(|_| self.spec.caller_env) else {
            return Vec::new();
        };
        let mut env = vec![
            ("MCP_GATEWAY_ISSUER", p.issuer.clone()),
            ("MCP_GATEWAY_SUBJECT", p.subject.clone()),
        ];
        if one_session {
            env.push((
                "MCP_GATEWAY_CLIENT_ID",
                p.client_id.clone().unwrap_or_default(),
            ));
            let scopes: Vec<&str> = p.scopes.iter().map(String::as_str).collect();
            env.push(("MCP_GATEWAY_SCOPES", scopes.join(" ")));
        }
        env
    }

    fn start_failed(&self, subject: String) {
        let mut all = lock(&self.backoff);
        let b = all.entry(subject).or_default();
        b.failures += 1;
        b.last = Some(Instant::now());
    }

    /// Ends the sessions of a process that serves several which have been
    /// idle for `idle` (no POST, no GET stream open): their clients start
    /// new ones (404), and the process keeps serving the others.
    fn end_idle_sessions(&self, process: &Process, idle: Duration) {
        let idle_sessions: Vec<Arc<Session>> = {
            let state = lock(&process.state);
            let busy: Vec<&Party> = state
                .pending
                .values()
                .filter_map(|p| p.from.as_ref())
                .collect();
            state
                .sessions
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|s| s.is_idle(idle) && !busy.iter().any(|b| b.owner == s.party().owner))
                .collect()
        };
        for session in idle_sessions {
            lock(&self.sessions).remove(session.id());
            lock(&self.stateless).retain(|_, s| !Arc::ptr_eq(s, &session));
            self.detach(&session);
        }
    }

    /// A process has exited: its sessions end, what waited on it is
    /// released, and nothing of the pool keeps it.
    fn forget(&self, process: &Arc<Process>) {
        let sessions: Vec<Arc<Session>> = {
            let mut state = lock(&process.state);
            state.exited = true;
            state.pending.clear();
            state.asked.clear();
            state
                .sessions
                .drain(..)
                .filter_map(|s| s.upgrade())
                .collect()
        };
        {
            let mut map = lock(&self.sessions);
            for s in &sessions {
                map.remove(s.id());
                s.close_stream();
            }
        }
        lock(&self.stateless).retain(|_, s| !Arc::ptr_eq(&s.process, process));
        if let Some(key) = &process.key {
            let mut keyed = lock(&self.keyed);
            // A start under way holds the cell's lock: it replaces the
            // entry's process itself.
            let ours = keyed.get(key).is_some_and(|cell| {
                cell.try_lock()
                    .is_ok_and(|p| p.as_ref().is_none_or(|p| Arc::ptr_eq(p, process)))
            });
            if ours {
                keyed.remove(key);
            }
        }
        lock(&process.slot).take();
    }
}

impl Drop for StdioPool {
    fn drop(&mut self) {
        self.stop_all("replaced");
    }
}

/// Reads the process's stdout until it ends, delivering each message;
/// then waits for its exit, counts it and forgets it.
async fn read_process(pool: Weak<StdioPool>, process: Arc<Process>, mut lines: Lines) {
    let mut exited_at: Option<tokio::time::Instant> = None;
    loop {
        // Once the child has exited, what it wrote is read for a moment
        // more: a descendant of its own session (out of its group's reach)
        // may hold stdout open for good.
        let next = match exited_at {
            None => tokio::select! {
                line = lines.next() => Some(line),
                _ = process.child.exit_status() => {
                    exited_at = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    continue;
                }
            },
            Some(until) => tokio::time::timeout_at(until, lines.next()).await.ok(),
        };
        let line = match next {
            None | Some(Line::End) => break,
            Some(Line::Message(line)) => line,
            Some(Line::TooLong) => {
                tracing::warn!(upstream = %process.upstream, pid = process.child.pid, "stdio upstream wrote a line over the size limit; stopping it");
                process.stop("protocol_error");
                break;
            }
        };
        match Message::parse(&line) {
            Ok(m) => process.deliver(m),
            Err(e) => process.stray_line(&e),
        }
    }
    // A process that closed its stdout but lives on is of no more use.
    if tokio::time::timeout(Duration::from_secs(1), process.child.exit_status())
        .await
        .is_err()
    {
        process.child.stop().await;
    }
    let status = process.child.exit_status().await;
    let reason = lock(&process.stopped_for).unwrap_or("crashed");
    tracing::info!(upstream = %process.upstream, pid = process.child.pid, %status, reason, "stdio upstream process exited");
    let m = metrics();
    m.stdio_processes
        .with_label_values(&[&process.upstream])
        .dec();
    m.stdio_exits
        .with_label_values(&[&process.upstream, reason])
        .inc();
    match pool.upgrade() {
        Some(pool) => pool.forget(&process),
        None => {
            lock(&process.state).exited = true;
            lock(&process.slot).take();
        }
    }
}

/// Every so often: forgets the process's requests nobody answered within
/// `idle`, ends its sessions idle as long (a process that serves several),
/// and stops it once it has had no request in flight and no message
/// either way for `idle`.
async fn watch_idle(pool: Weak<StdioPool>, process: Weak<Process>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        let (Some(pool), Some(process)) = (pool.upgrade(), process.upgrade()) else {
            return;
        };
        let idle_now = {
            let state = lock(&process.state);
            if state.exited {
                return;
            }
            state.pending.is_empty()
                && state.last_active.is_some_and(|t| t.elapsed() >= idle)
                && !state
                    .sessions
                    .iter()
                    .filter_map(Weak::upgrade)
                    .any(|s| s.is_listening())
        };
        if idle_now {
            tracing::info!(upstream = %process.upstream, pid = process.child.pid, "stdio upstream process idle; stopping it");
            process.stop("idle");
            return;
        }
        process.forget_unanswered(idle);
        if process.key.is_some() {
            pool.end_idle_sessions(&process, idle);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_starts_back_off_doubling_up_to_30_seconds() {
        let mut b = Backoff::default();
        assert_eq!(b.wait(), None, "no failure, no wait");
        b.last = Some(Instant::now());
        for (failures, most) in [(1, 1), (2, 2), (3, 4), (6, 30), (20, 30)] {
            b.failures = failures;
            let wait = b.wait().unwrap();
            assert!(
                wait <= Duration::from_secs(most) && wait > Duration::from_secs(most) / 2,
                "{failures} failures: {wait:?}"
            );
        }
        b.last = Instant::now().checked_sub(Duration::from_secs(31));
        assert_eq!(b.wait(), None, "the wait is over");
    }
}
