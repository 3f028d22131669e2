//! The processes of one stdio upstream and the MCP sessions on them (see
//! the module doc of `crate::stdio` for where messages go).

use super::message::{self, Kind, Message};
use super::process::{Child, Line, Lines};
use crate::auth::Principal;
use crate::config::{Isolation, StdioCommand};
use crate::metrics::metrics;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// The protocol revision of the bridge's own `initialize` for stateless
/// clients: the newest one with `initialize` (a stdio server answers with
/// the revision it speaks).
const STATELESS_PROTOCOL_VERSION: &str = "2025-11-25";

/// A caller's subject, qualified by its issuer; empty for no caller.
fn subject_key(caller: Option<&Principal>) -> String {
    caller.map_or_else(String::new, |p| format!("{}\n{}", p.issuer, p.subject))
}

/// JSON-RPC error code of a request the process can no longer answer.
const PROCESS_GONE: i64 = -32603;

/// Messages queued for one client stream before the process waits.
const STREAM_QUEUE: usize = 64;

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
    /// Recent starts failed; the next is not tried before `retry_after`.
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
}

/// The process of one key, behind the lock its first start holds.
type KeyedProcess = Arc<tokio::sync::Mutex<Option<Arc<Process>>>>;

/// The child processes of one stdio upstream, and its MCP sessions.
pub struct StdioPool {
    name: String,
    spec: StdioCommand,
    me: Weak<StdioPool>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// `per_subject` and `shared`: the process of each key, started once.
    keyed: Mutex<HashMap<String, KeyedProcess>>,
    /// Every process started and not yet exited.
    running: Mutex<Vec<Weak<Process>>>,
    /// The sessions the bridge opened itself for stateless clients, by key.
    stateless: Mutex<HashMap<String, Arc<Session>>>,
    slots: Arc<Semaphore>,
    backoff: Mutex<Backoff>,
}

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

/// One MCP session: a client's `Mcp-Session-Id` on a process.
pub struct Session {
    id: String,
    process: Arc<Process>,
    /// The session's GET stream, while one is open.
    stream: Mutex<Option<mpsc::Sender<Bytes>>>,
}

/// A running child and the requests in flight on it.
struct Process {
    upstream: String,
    child: Arc<Child>,
    state: Mutex<ProcessState>,
    next_id: AtomicU64,
    /// Whether `notifications/initialized` has been written (only the
    /// first session's reaches a shared process).
    initialized: AtomicBool,
    /// The `initialize` result, answered to later sessions of a shared
    /// process.
    init_result: Mutex<Option<Box<RawValue>>>,
    /// Why the gateway stopped it, when it did.
    stopped_for: Mutex<Option<&'static str>>,
    /// Held while it runs: one of `max_processes`.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

#[derive(Default)]
struct ProcessState {
    /// Requests written to the process, by the id the bridge gave them.
    pending: HashMap<u64, Pending>,
    /// Requests of the process to a client, by the id the bridge gave them:
    /// the session that may answer, and the process's own id.
    asked: HashMap<u64, (String, Box<RawValue>)>,
    sessions: Vec<Weak<Session>>,
    last_active: Option<Instant>,
    exited: bool,
}

/// A client's request waiting for the process's answer.
struct Pending {
    /// `None` for the bridge's own `initialize`.
    session: Option<String>,
    client_id: Box<RawValue>,
    progress_token: Option<String>,
    reply: mpsc::Sender<Outbound>,
    /// Whether the reply is an event stream, which can carry the process's
    /// own requests and notifications too.
    streams: bool,
}

/// A message for a client stream.
enum Outbound {
    /// The answer to the request the bridge numbered so.
    Answer(u64, Bytes),
    /// A request or notification of the process.
    Other(Bytes),
    /// The client cancelled the request the bridge numbered so.
    Cancelled(u64),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
        self.open_session(self.key(caller), caller, request).await
    }

    /// The session for a stateless (MCP 2026-07-28) caller, which has no
    /// `initialize` and no `Mcp-Session-Id`: one process per caller (by
    /// issuer and subject; every anonymous caller shares one), or the
    /// shared process, initialized by the bridge itself the first time.
    pub async fn stateless_session(
        &self,
        caller: Option<&Principal>,
    ) -> Result<Arc<Session>, StdioError> {
        let key = match self.spec.isolation {
            Isolation::Shared => String::new(),
            _ => format!("stateless\n{}", subject_key(caller)),
        };
        let live = lock(&self.stateless)
            .get(&key)
            .filter(|s| !s.process.has_exited())
            .cloned();
        if let Some(session) = live {
            return Ok(session);
        }
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
        let (session, answer) = self
            .open_session(Some(key.clone()), caller, initialize)
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
        session.send(vec![initialized], false).await?;
        lock(&self.sessions).remove(&session.id);
        lock(&self.stateless).insert(key, session.clone());
        Ok(session)
    }

    /// A new session on the process of `key` (a new process for `None`).
    async fn open_session(
        &self,
        key: Option<String>,
        caller: Option<&Principal>,
        mut request: Message,
    ) -> Result<(Option<Arc<Session>>, Bytes), StdioError> {
        let client_id = request.take_id().unwrap_or_else(message::null);
        let (process, answer) = match key {
            None => {
                let process = self.start(caller).await?;
                let answer = self.first_initialize(&process, request, client_id).await?;
                (process, answer)
            }
            Some(key) => {
                let cell = lock(&self.keyed).entry(key).or_default().clone();
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
                        let process = self.start(caller).await?;
                        let answer = self.first_initialize(&process, request, client_id).await?;
                        *slot = Some(process.clone());
                        (process, answer)
                    }
                }
            }
        };
        if lock(&process.init_result).is_none() {
            return Ok((None, answer));
        }
        let session = Arc::new(Session {
            id: crate::authserver::random_token(24),
            process: process.clone(),
            stream: Mutex::default(),
        });
        {
            let mut state = lock(&process.state);
            if state.exited {
                return Err(StdioError::SessionGone);
            }
            state.sessions.push(Arc::downgrade(&session));
        }
        lock(&self.sessions).insert(session.id.clone(), session.clone());
        Ok((Some(session), answer))
    }

    /// A new process's `initialize`; a start that fails or times out
    /// counts for the backoff, one that is answered clears it.
    async fn first_initialize(
        &self,
        process: &Arc<Process>,
        request: Message,
        client_id: Box<RawValue>,
    ) -> Result<Bytes, StdioError> {
        let answered = process.initialize(request, client_id, &self.spec).await;
        match &answered {
            Ok(_) => self.start_succeeded(),
            Err(_) => self.start_failed(),
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
        lock(&session.stream).take();
        {
            let mut state = lock(&session.process.state);
            state
                .sessions
                .retain(|s| s.upgrade().is_some_and(|s| s.id != id));
        }
        if self.spec.isolation == Isolation::PerSession {
            session.process.stop("deleted");
        }
        true
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

    /// The key of the process a caller's session goes to; `None`: a new one.
    fn key(&self, caller: Option<&Principal>) -> Option<String> {
        match self.spec.isolation {
            Isolation::PerSession => None,
            Isolation::Shared => Some(String::new()),
            Isolation::PerSubject => {
                Some(caller.map_or_else(String::new, |p| format!("{}\n{}", p.issuer, p.subject)))
            }
        }
    }

    /// Starts a process, within the limit and the backoff.
    async fn start(&self, caller: Option<&Principal>) -> Result<Arc<Process>, StdioError> {
        let backoff = {
            let b = lock(&self.backoff);
            b.wait().map(|wait| (b.failures, wait))
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
        let env = self.caller_env(caller);
        let (child, lines) = Child::spawn(&self.spec, &env, &self.name).map_err(|e| {
            self.start_failed();
            StdioError::StartFailed {
                upstream: self.name.clone(),
                detail: e.to_string(),
            }
        })?;
        let m = metrics();
        m.stdio_starts.with_label_values(&[&self.name]).inc();
        m.stdio_processes.with_label_values(&[&self.name]).inc();
        tracing::info!(upstream = %self.name, pid = child.pid, isolation = self.spec.isolation.as_str(), "stdio upstream process started");
        let process = Arc::new(Process {
            upstream: self.name.clone(),
            child,
            state: Mutex::new(ProcessState {
                last_active: Some(Instant::now()),
                ..ProcessState::default()
            }),
            next_id: AtomicU64::new(1),
            initialized: AtomicBool::new(false),
            init_result: Mutex::default(),
            stopped_for: Mutex::default(),
            slot: Mutex::new(Some(slot)),
        });
        {
            let mut running = lock(&self.running);
            running.retain(|p| p.strong_count() > 0);
            running.push(Arc::downgrade(&process));
        }
        tokio::spawn(read_process(self.me.clone(), process.clone(), lines));
        tokio::spawn(stop_when_idle(
            Arc::downgrade(&process),
            self.spec.idle_timeout,
        ));
        Ok(process)
    }

    /// The caller's identity for the child's environment (`caller_env`):
    /// the subject and issuer, and for a `per_session` process also the
    /// client and its scopes.
    fn caller_env(&self, caller: Option<&Principal>) -> Vec<(&'static str, String)> {
        let Some(p) = caller.filter(|_| self.spec.caller_env) else {
            return Vec::new();
        };
        let mut env = vec![
            ("MCP_GATEWAY_ISSUER", p.issuer.clone()),
            ("MCP_GATEWAY_SUBJECT", p.subject.clone()),
        ];
        if self.spec.isolation == Isolation::PerSession {
            env.push((
                "MCP_GATEWAY_CLIENT_ID",
                p.client_id.clone().unwrap_or_default(),
            ));
            let scopes: Vec<&str> = p.scopes.iter().map(String::as_str).collect();
            env.push(("MCP_GATEWAY_SCOPES", scopes.join(" ")));
        }
        env
    }

    fn start_failed(&self) {
        let mut b = lock(&self.backoff);
        b.failures += 1;
        b.last = Some(Instant::now());
    }

    fn start_succeeded(&self) {
        *lock(&self.backoff) = Backoff::default();
    }

    /// A process has exited: its sessions end, what waited on it is
    /// released, and the exit is counted by its reason.
    fn forget(&self, process: &Process, reason: &'static str) {
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
        let mut map = lock(&self.sessions);
        for s in &sessions {
            map.remove(&s.id);
            lock(&s.stream).take();
        }
        drop(map);
        lock(&process.slot).take();
        let m = metrics();
        m.stdio_processes.with_label_values(&[&self.name]).dec();
        m.stdio_exits.with_label_values(&[&self.name, reason]).inc();
    }
}

impl Drop for StdioPool {
    fn drop(&mut self) {
        self.stop_all("replaced");
    }
}

impl Process {
    fn has_exited(&self) -> bool {
        lock(&self.state).exited || self.child.has_exited()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops the child in the background, remembering why.
    fn stop(&self, reason: &'static str) {
        lock(&self.stopped_for).get_or_insert(reason);
        let child = self.child.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { child.stop().await });
        }
    }

    /// Writes the first `initialize` and waits (within the startup
    /// timeout) for the answer, which goes back with the client's id.
    async fn initialize(
        self: &Arc<Self>,
        mut request: Message,
        client_id: Box<RawValue>,
        spec: &StdioCommand,
    ) -> Result<Bytes, StdioError> {
        let upstream = self.upstream.clone();
        let (tx, mut rx) = mpsc::channel(STREAM_QUEUE);
        let id = self.next_id();
        lock(&self.state).pending.insert(
            id,
            Pending {
                session: None,
                client_id,
                progress_token: None,
                reply: tx,
                streams: false,
            },
        );
        request.set_id(message::number(id));
        let started = self.child.send(request.to_bytes()).await;
        let answer = async {
            while let Some(out) = rx.recv().await {
                if let Outbound::Answer(_, bytes) = out {
                    return Some(bytes);
                }
            }
            None
        };
        let answer = match (
            started,
            tokio::time::timeout(spec.startup_timeout, answer).await,
        ) {
            (true, Ok(Some(bytes))) => bytes,
            (_, Err(_)) => {
                self.stop("startup_timeout");
                return Err(StdioError::StartTimeout {
                    upstream,
                    timeout: spec.startup_timeout,
                });
            }
            _ => {
                let status = self.child.exit_status().await;
                return Err(StdioError::StartFailed {
                    upstream,
                    detail: format!("it exited ({status}) before answering `initialize`"),
                });
            }
        };
        let result = Message::parse(&answer)
            .ok()
            .and_then(|m| m.result().map(ToOwned::to_owned));
        match result {
            Some(result) => *lock(&self.init_result) = Some(result),
            None => {
                // Refused (an error answer): the client gets it, and the
                // process has no session to serve.
                self.stop("refused_initialize");
            }
        }
        Ok(answer)
    }
}

impl Session {
    /// The `Mcp-Session-Id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes a POST's messages to the process. Requests get answers on
    /// the returned exchange (`None` when the POST had none); `streams`:
    /// the client reads an event stream, which can also carry what the
    /// process sends meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        messages: Vec<Message>,
        streams: bool,
    ) -> Result<Option<Exchange>, StdioError> {
        let process = &self.process;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let mut asked = Vec::new();
        let mut lines = Vec::new();
        {
            let mut state = lock(&process.state);
            if state.exited {
                return Err(StdioError::SessionGone);
            }
            state.last_active = Some(Instant::now());
            for mut m in messages {
                match m.kind() {
                    Kind::Request => {
                        let id = process.next_id();
                        let client_id = m.take_id().unwrap_or_else(message::null);
                        asked.push((id, client_id.clone()));
                        state.pending.insert(
                            id,
                            Pending {
                                session: Some(self.id.clone()),
                                client_id,
                                progress_token: m
                                    .param("_meta.progressToken")
                                    .map(|t| t.get().to_owned()),
                                reply: tx.clone(),
                                streams,
                            },
                        );
                        m.set_id(message::number(id));
                    }
                    Kind::Notification => {
                        let method = m.method();
                        if method.as_deref() == Some("notifications/initialized")
                            && process.initialized.swap(true, Ordering::Relaxed)
                        {
                            continue;
                        }
                        if method.as_deref() == Some("notifications/cancelled") {
                            // The client gives up on its request: no answer
                            // will come (MCP "Cancellation"), so its POST
                            // stops waiting for one.
                            let named = m.param("requestId");
                            let ours = state
                                .pending
                                .iter()
                                .find(|(_, p)| {
                                    p.session.as_deref() == Some(&self.id)
                                        && named
                                            .as_ref()
                                            .is_some_and(|n| n.get() == p.client_id.get())
                                })
                                .map(|(&id, _)| id);
                            let Some(p) = ours.and_then(|id| state.pending.remove(&id)) else {
                                continue;
                            };
                            let id = ours.unwrap_or_default();
                            let _ = p.reply.try_send(Outbound::Cancelled(id));
                            m.set_param("requestId", message::number(id));
                        }
                    }
                    Kind::Response => {
                        let ours = m
                            .id()
                            .and_then(message::as_number)
                            .filter(|id| {
                                state
                                    .asked
                                    .get(id)
                                    .is_some_and(|(session, _)| *session == self.id)
                            })
                            .and_then(|id| state.asked.remove(&id));
                        match ours {
                            Some((_, original)) => m.set_id(original),
                            None => {
                                tracing::debug!(upstream = %process.upstream, "dropped an answer to no request of this session");
                                continue;
                            }
                        }
                    }
                }
                lines.push(m.to_bytes());
            }
        }
        for line in lines {
            if !process.child.send(line).await {
                return Err(StdioError::SessionGone);
            }
        }
        Ok((!asked.is_empty()).then(|| Exchange {
            rx,
            asked,
            process: process.clone(),
        }))
    }

    /// Opens the session's GET stream, which carries what the process
    /// sends outside any POST.
    pub fn open_stream(&self) -> Result<mpsc::Receiver<Bytes>, StdioError> {
        if self.process.has_exited() {
            return Err(StdioError::SessionGone);
        }
        let mut stream = lock(&self.stream);
        if stream.as_ref().is_some_and(|s| !s.is_closed()) {
            return Err(StdioError::StreamOpen);
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        *stream = Some(tx);
        Ok(rx)
    }
}

/// The answers to one POST's requests, and what else the process sends its
/// client meanwhile. Dropped before every answer came (the client left),
/// it cancels the requests still open.
pub struct Exchange {
    rx: mpsc::Receiver<Outbound>,
    /// The requests not yet answered: the bridge's id and the client's.
    asked: Vec<(u64, Box<RawValue>)>,
    process: Arc<Process>,
}

impl Exchange {
    /// The next message for the client, `None` once every request has its
    /// answer. Requests the process can no longer answer (it exited) get
    /// a JSON-RPC error.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.asked.is_empty() {
                return None;
            }
            match self.rx.recv().await {
                Some(Outbound::Answer(id, bytes)) => {
                    self.asked.retain(|(a, _)| *a != id);
                    return Some(bytes);
                }
                Some(Outbound::Other(bytes)) => return Some(bytes),
                Some(Outbound::Cancelled(id)) => self.asked.retain(|(a, _)| *a != id),
                None => return Some(self.unanswered()),
            }
        }
    }

    /// A JSON-RPC error for the first request the process can no longer
    /// answer.
    fn unanswered(&mut self) -> Bytes {
        let (_, client_id) = self.asked.remove(0);
        let reason = lock(&self.process.stopped_for).unwrap_or("it exited");
        let text = format!(
            "upstream `{}` ended before answering ({reason})",
            self.process.upstream
        );
        Message::response(client_id, Err((PROCESS_GONE, &text))).to_bytes()
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if self.asked.is_empty() {
            return;
        }
        let mut state = lock(&self.process.state);
        for (id, _) in &self.asked {
            if state.pending.remove(id).is_none() || state.exited {
                continue;
            }
            let cancel = Message::notification(
                "notifications/cancelled",
                serde_json::json!({"requestId": id, "reason": "the client disconnected"}),
            );
            // Best effort: a full stdin queue means the process is stuck.
            let _ = self.process.child.try_send(cancel.to_bytes());
        }
    }
}

/// Reads the process's stdout until it ends, delivering each message;
/// then waits for its exit and forgets it.
async fn read_process(pool: Weak<StdioPool>, process: Arc<Process>, mut lines: Lines) {
    loop {
        let line = match lines.next().await {
            Line::Message(line) => line,
            Line::End => break,
            Line::TooLong => {
                tracing::warn!(upstream = %process.upstream, pid = process.child.pid, "stdio upstream wrote a line over the size limit; stopping it");
                process.stop("protocol_error");
                break;
            }
        };
        match Message::parse(&line) {
            Ok(m) => deliver(&process, m).await,
            Err(e) => {
                tracing::warn!(upstream = %process.upstream, pid = process.child.pid, error = %e, "stdio upstream wrote a line that is not JSON-RPC; skipped")
            }
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
    match pool.upgrade() {
        Some(pool) => pool.forget(&process, reason),
        None => {
            lock(&process.slot).take();
        }
    }
}

/// Routes one message of the process (see the module doc).
async fn deliver(process: &Process, mut m: Message) {
    let mut sends: Vec<(mpsc::Sender<Outbound>, Outbound)> = Vec::new();
    let mut streams: Vec<(mpsc::Sender<Bytes>, Bytes)> = Vec::new();
    let mut refuse = None;
    {
        let mut state = lock(&process.state);
        state.last_active = Some(Instant::now());
        match m.kind() {
            Kind::Response => {
                let Some(id) = m.id().and_then(message::as_number) else {
                    return;
                };
                let Some(p) = state.pending.remove(&id) else {
                    return;
                };
                m.set_id(p.client_id);
                sends.push((p.reply, Outbound::Answer(id, m.to_bytes())));
            }
            Kind::Notification => {
                let token = m
                    .param("progressToken")
                    .filter(|_| m.method().as_deref() == Some("notifications/progress"))
                    .map(|t| t.get().to_owned());
                let target = token.and_then(|t| {
                    state
                        .pending
                        .values()
                        .find(|p| p.progress_token.as_deref() == Some(t.as_str()) && p.streams)
                });
                match target {
                    Some(p) => sends.push((p.reply.clone(), Outbound::Other(m.to_bytes()))),
                    None => {
                        let bytes = m.to_bytes();
                        for session in state.sessions.iter().filter_map(Weak::upgrade) {
                            match newest_post(&state, Some(&session.id)) {
                                Some(p) => {
                                    sends.push((p.reply.clone(), Outbound::Other(bytes.clone())))
                                }
                                None => streams.extend(
                                    lock(&session.stream).clone().map(|s| (s, bytes.clone())),
                                ),
                            }
                        }
                    }
                }
            }
            Kind::Request => {
                let original = m.take_id().unwrap_or_else(message::null);
                let target = newest_post(&state, None)
                    .map(|p| {
                        (
                            p.session.clone().unwrap_or_default(),
                            Some(p.reply.clone()),
                            None,
                        )
                    })
                    .or_else(|| {
                        state
                            .sessions
                            .iter()
                            .filter_map(Weak::upgrade)
                            .find_map(|s| {
                                let stream = lock(&s.stream).clone().filter(|s| !s.is_closed())?;
                                Some((s.id.clone(), None, Some(stream)))
                            })
                    });
                match target {
                    Some((session, reply, stream)) => {
                        let id = process.next_id();
                        state.asked.insert(id, (session, original));
                        m.set_id(message::number(id));
                        let bytes = m.to_bytes();
                        if let Some(reply) = reply {
                            sends.push((reply, Outbound::Other(bytes)));
                        } else if let Some(stream) = stream {
                            streams.push((stream, bytes));
                        }
                    }
                    None => refuse = Some(original),
                }
            }
        }
    }
    for (tx, out) in sends {
        let _ = tx.send(out).await;
    }
    for (tx, bytes) in streams {
        let _ = tx.send(bytes).await;
    }
    if let Some(id) = refuse {
        let answer = Message::response(
            id,
            Err((
                PROCESS_GONE,
                "no client stream is open to receive this request",
            )),
        );
        process.child.send(answer.to_bytes()).await;
    }
}

/// The newest request in flight whose reply streams, of `session` or, for
/// `None`, of any session.
fn newest_post<'s>(state: &'s ProcessState, session: Option<&str>) -> Option<&'s Pending> {
    state
        .pending
        .iter()
        .filter(|(_, p)| {
            p.streams
                && p.session.is_some()
                && session.is_none_or(|s| p.session.as_deref() == Some(s))
        })
        .max_by_key(|(id, _)| **id)
        .map(|(_, p)| p)
}

/// Stops the process once it has had no request in flight and no message
/// either way for `idle`.
async fn stop_when_idle(process: Weak<Process>, idle: Duration) {
    let tick = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        let Some(process) = process.upgrade() else {
            return;
        };
        let idle_now = {
            let state = lock(&process.state);
            if state.exited {
                return;
            }
            state.pending.is_empty() && state.last_active.is_some_and(|t| t.elapsed() >= idle)
        };
        if idle_now {
            tracing::info!(upstream = %process.upstream, pid = process.child.pid, "stdio upstream process idle; stopping it");
            process.stop("idle");
            return;
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
