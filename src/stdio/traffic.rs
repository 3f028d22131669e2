//! One running process of a stdio upstream and the messages in flight on
//! it: what it was asked and by whom, what it asked and of whom, and where
//! each message it writes goes (see the module doc of `crate::stdio`).

use super::message::{self, Kind, Message};
use super::process::{Child, LineBudget};
use super::session::Session;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

/// JSON-RPC error code of a request the process can no longer answer.
pub(super) const PROCESS_GONE: i64 = -32603;

/// Requests and notifications of the process queued for one client stream
/// (a POST's or a GET's); past this the client is not keeping up, and the
/// process is not held up for it: more are dropped (a POST) or the stream
/// is closed (a GET).
pub(super) const STREAM_QUEUE: usize = 64;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Who is on the other side of a session: its owner (who may answer the
/// process's requests and cancel its own) and the owner's subject. A
/// session-based client owns its session; a stateless one is known only
/// by its subject, so all of one subject's stateless calls share an owner.
#[derive(Clone)]
pub(super) struct Party {
    pub(super) owner: Arc<str>,
    pub(super) subject: Arc<str>,
}

/// A running child and the requests in flight on it.
pub(super) struct Process {
    pub(super) upstream: String,
    pub(super) child: Arc<Child>,
    /// The key it was started for (`per_subject`, `shared`, a stateless
    /// caller); `None` for the process of one session.
    pub(super) key: Option<String>,
    pub(super) state: Mutex<ProcessState>,
    next_id: AtomicU64,
    /// Whether `notifications/initialized` has been written (only the
    /// first session's reaches a process that serves several).
    pub(super) initialized: AtomicBool,
    /// The `initialize` result, answered to later sessions of a process
    /// that serves several.
    pub(super) init_result: Mutex<Option<Box<RawValue>>>,
    /// Why the gateway stopped it, when it did.
    pub(super) stopped_for: Mutex<Option<&'static str>>,
    /// Held while it runs: one of `max_processes`.
    pub(super) slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// Warnings about lines that are not JSON-RPC, within a rate.
    strays: Mutex<LineBudget>,
}

#[derive(Default)]
pub(super) struct ProcessState {
    /// Requests written to the process, by the id the bridge gave them.
    pub(super) pending: HashMap<u64, Pending>,
    /// Requests of the process to a client, by the id the bridge gave them.
    pub(super) asked: HashMap<u64, Asked>,
    pub(super) sessions: Vec<Weak<Session>>,
    /// Every subject it has served a session of (never shrinks: what the
    /// process says later may be about a subject whose session ended).
    pub(super) served: HashSet<Arc<str>>,
    /// The last word from a client (the process's own messages do not
    /// count: a process talking to nobody is idle).
    pub(super) last_active: Option<Instant>,
    pub(super) exited: bool,
}

/// A client's request waiting for the process's answer.
pub(super) struct Pending {
    /// Who sent it; `None` for the bridge's own `initialize`.
    pub(super) from: Option<Party>,
    pub(super) client_id: Box<RawValue>,
    /// The client's own progress token; the process saw the bridge's id.
    pub(super) progress_token: Option<Box<RawValue>>,
    pub(super) reply: Reply,
    /// Whether the reply is an event stream, which can carry the process's
    /// own requests and notifications too.
    pub(super) streams: bool,
}

/// A request of the process to a client, waiting for the answer.
pub(super) struct Asked {
    /// Who may answer it.
    pub(super) owner: Arc<str>,
    /// The process's own id for it.
    pub(super) original: Box<RawValue>,
    pub(super) since: Instant,
}

/// A message for a POST's stream.
pub(super) enum Outbound {
    /// The answer to the request the bridge numbered so.
    Answer(u64, Bytes),
    /// A request or notification of the process.
    Other(Bytes),
    /// The client cancelled the request the bridge numbered so.
    Cancelled(u64),
}

/// Where the process's messages for one POST go. Answers always fit (one
/// per request of the POST); other messages only [`STREAM_QUEUE`] at a
/// time, so that a client that stops reading cannot hold up the process.
#[derive(Clone)]
pub(super) struct Reply {
    tx: mpsc::UnboundedSender<Outbound>,
    others: Arc<AtomicUsize>,
}

/// The receiving end of a [`Reply`].
pub(super) struct Replies {
    rx: mpsc::UnboundedReceiver<Outbound>,
    others: Arc<AtomicUsize>,
}

impl Reply {
    pub(super) fn channel() -> (Self, Replies) {
        let (tx, rx) = mpsc::unbounded_channel();
        let others = Arc::new(AtomicUsize::new(0));
        (
            Self {
                tx,
                others: others.clone(),
            },
            Replies { rx, others },
        )
    }

    fn answer(&self, id: u64, bytes: Bytes) {
        let _ = self.tx.send(Outbound::Answer(id, bytes));
    }

    pub(super) fn cancelled(&self, id: u64) {
        let _ = self.tx.send(Outbound::Cancelled(id));
    }

    /// Queues a request or notification; `false` if the client has
    /// [`STREAM_QUEUE`] of them unread, or is gone.
    fn other(&self, bytes: Bytes) -> bool {
        if self.others.fetch_add(1, Ordering::AcqRel) >= STREAM_QUEUE {
            self.others.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let sent = self.tx.send(Outbound::Other(bytes)).is_ok();
        if !sent {
            self.others.fetch_sub(1, Ordering::AcqRel);
        }
        sent
    }
}

impl Replies {
    pub(super) async fn recv(&mut self) -> Option<Outbound> {
        let out = self.rx.recv().await;
        if let Some(Outbound::Other(_)) = &out {
            self.others.fetch_sub(1, Ordering::AcqRel);
        }
        out
    }
}

impl Process {
    pub(super) fn new(
        upstream: &str,
        child: Arc<Child>,
        key: Option<String>,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            upstream: upstream.to_owned(),
            child,
            key,
            state: Mutex::new(ProcessState {
                last_active: Some(Instant::now()),
                ..ProcessState::default()
            }),
            next_id: AtomicU64::new(1),
            initialized: AtomicBool::new(false),
            init_result: Mutex::default(),
            stopped_for: Mutex::default(),
            slot: Mutex::new(Some(slot)),
            strays: Mutex::new(LineBudget::new(Instant::now())),
        }
    }

    pub(super) fn has_exited(&self) -> bool {
        lock(&self.state).exited || self.child.has_exited()
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Stops the child in the background, remembering why.
    pub(super) fn stop(&self, reason: &'static str) {
        lock(&self.stopped_for).get_or_insert(reason);
        let child = self.child.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { child.stop().await });
        }
    }

    /// Writes the first `initialize` and waits (within `startup_timeout`)
    /// for the answer, which goes back with the client's id.
    pub(super) async fn initialize(
        self: &Arc<Self>,
        mut request: Message,
        client_id: Box<RawValue>,
        startup_timeout: Duration,
    ) -> Result<Bytes, super::StdioError> {
        let upstream = self.upstream.clone();
        let (reply, mut replies) = Reply::channel();
        let id = self.next_id();
        lock(&self.state).pending.insert(
            id,
            Pending {
                from: None,
                client_id,
                progress_token: None,
                reply,
                streams: false,
            },
        );
        request.set_id(message::number(id));
        let started = self.child.send(request.to_bytes()).await;
        let answer = async {
            while let Some(out) = replies.recv().await {
                if let Outbound::Answer(_, bytes) = out {
                    return Some(bytes);
                }
            }
            None
        };
        let answer = match (started, tokio::time::timeout(startup_timeout, answer).await) {
            (true, Ok(Some(bytes))) => bytes,
            (_, Err(_)) => {
                self.stop("startup_timeout");
                return Err(super::StdioError::StartTimeout {
                    upstream,
                    timeout: startup_timeout,
                });
            }
            _ => {
                let status = self.child.exit_status().await;
                return Err(super::StdioError::StartFailed {
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
            // Refused (an error answer): the client gets it, and the
            // process has no session to serve.
            None => self.stop("refused_initialize"),
        }
        Ok(answer)
    }

    /// A line of its stdout that is not JSON-RPC: skipped, with a warning
    /// at a bounded rate.
    pub(super) fn stray_line(&self, error: &super::MessageError) {
        if let Some(suppressed) = lock(&self.strays).take(Instant::now()) {
            tracing::warn!(upstream = %self.upstream, pid = self.child.pid, error = %error, suppressed, "stdio upstream wrote a line that is not JSON-RPC; skipped");
        }
    }

    /// Forgets the requests of the process that no client answered within
    /// `lifetime`.
    pub(super) fn forget_unanswered(&self, lifetime: Duration) {
        lock(&self.state)
            .asked
            .retain(|_, a| a.since.elapsed() < lifetime);
    }

    /// Routes one message of the process (see the module doc). Never
    /// waits: a client that is not keeping up loses what does not fit.
    pub(super) fn deliver(&self, mut m: Message) {
        let mut refuse = None;
        {
            let mut state = lock(&self.state);
            match (m.kind(), m.method().as_deref()) {
                (Kind::Response, _) => {
                    let Some(p) = m
                        .id()
                        .and_then(message::as_number)
                        .and_then(|id| state.pending.remove(&id).map(|p| (id, p)))
                    else {
                        return;
                    };
                    let (id, p) = p;
                    m.set_id(p.client_id);
                    p.reply.answer(id, m.to_bytes());
                }
                (Kind::Notification, Some("notifications/progress")) => {
                    self.progress(&state, m);
                }
                (Kind::Notification, Some("notifications/cancelled")) => {
                    self.withdrawn(&mut state, m);
                }
                (Kind::Notification, method) => {
                    let bytes = m.to_bytes();
                    match audience(&state) {
                        Some(reach) => {
                            for dest in reach {
                                dest.push(&bytes);
                            }
                        }
                        // Several users and nothing tells whose it is:
                        // only news about the server itself is for all.
                        None if method.is_some_and(|m| m.ends_with("/list_changed")) => {
                            for session in live_sessions(&state) {
                                if let Some(dest) = reach(&state, &session.party().owner) {
                                    dest.push(&bytes);
                                }
                            }
                        }
                        None => {
                            tracing::debug!(upstream = %self.upstream, "a notification of a process serving several users concerned no one call; dropped");
                        }
                    }
                }
                (Kind::Request, _) => {
                    let original = m.take_id().unwrap_or_else(message::null);
                    let id = self.next_id();
                    m.set_id(message::number(id));
                    let bytes = m.to_bytes();
                    let taker = audience(&state)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|dest| dest.push(&bytes));
                    match taker {
                        Some(dest) => {
                            let asked = Asked {
                                owner: dest.owner(),
                                original,
                                since: Instant::now(),
                            };
                            state.asked.insert(id, asked);
                        }
                        None => refuse = Some(original),
                    }
                }
            }
        }
        if let Some(id) = refuse {
            let answer = Message::response(
                id,
                Err((
                    PROCESS_GONE,
                    "no client can take this request: none has a stream open for it, or it cannot be told which client it is for",
                )),
            );
            // A process whose stdin is full is stuck anyway.
            self.child.try_send(answer.to_bytes());
        }
    }

    /// A progress notification goes to the call whose token it carries,
    /// under the client's own token; one for no call in flight is dropped.
    fn progress(&self, state: &ProcessState, mut m: Message) {
        let call = m
            .param("progressToken")
            .and_then(|t| message::as_number(&t))
            .and_then(|id| state.pending.get(&id))
            .and_then(|p| Some((p.progress_token.clone()?, p)))
            .filter(|(_, p)| p.streams);
        match call {
            Some((token, p)) => {
                m.set_param("progressToken", token);
                p.reply.other(m.to_bytes());
            }
            None => {
                tracing::debug!(upstream = %self.upstream, "progress for no call in flight; dropped");
            }
        }
    }

    /// The process gives up on a request it sent a client: the client that
    /// was asked hears of it, under the id it was asked with.
    fn withdrawn(&self, state: &mut ProcessState, mut m: Message) {
        let named = m.param("requestId");
        let ours = state
            .asked
            .iter()
            .find(|(_, a)| named.as_ref().is_some_and(|n| n.get() == a.original.get()))
            .map(|(&id, _)| id);
        let Some((id, asked)) = ours.and_then(|id| state.asked.remove(&id).map(|a| (id, a))) else {
            return;
        };
        m.set_param("requestId", message::number(id));
        if let Some(dest) = reach(state, &asked.owner) {
            dest.push(&m.to_bytes());
        }
    }
}

/// One place a message of the process can go.
enum Dest {
    /// A POST's event stream, of its owner.
    Post(Reply, Arc<str>),
    /// A session's GET stream.
    Stream(Arc<Session>),
}

impl Dest {
    fn push(&self, bytes: &Bytes) -> bool {
        match self {
            Dest::Post(reply, _) => reply.other(bytes.clone()),
            Dest::Stream(session) => session.push(bytes.clone()),
        }
    }

    fn owner(&self) -> Arc<str> {
        match self {
            Dest::Post(_, owner) => owner.clone(),
            Dest::Stream(session) => session.party().owner.clone(),
        }
    }
}

fn live_sessions(state: &ProcessState) -> Vec<Arc<Session>> {
    state.sessions.iter().filter_map(Weak::upgrade).collect()
}

/// Where a request or notification of the process that names no call
/// goes, best first: while calls are in flight as event streams, to the
/// newest of each of their owners (what a process says during a call is
/// about the call); otherwise to the sessions' GET streams. `None` once
/// the process has served more than one subject: such a message names no
/// caller, and neither a call in flight nor the sessions left prove whose
/// it is (it may be about a subscription or a job of a subject whose
/// session has ended).
fn audience(state: &ProcessState) -> Option<Vec<Dest>> {
    if state.served.len() > 1 {
        return None;
    }
    let mut calls: Vec<(u64, &Party, &Reply)> = state
        .pending
        .iter()
        .filter(|(_, p)| p.streams)
        .filter_map(|(&id, p)| Some((id, p.from.as_ref()?, &p.reply)))
        .collect();
    if calls.is_empty() {
        return Some(live_sessions(state).into_iter().map(Dest::Stream).collect());
    }
    calls.sort_by_key(|(id, _, _)| std::cmp::Reverse(*id));
    let mut owners = HashSet::new();
    Some(
        calls
            .into_iter()
            .filter(|(_, p, _)| owners.insert(p.owner.clone()))
            .map(|(_, p, reply)| Dest::Post(reply.clone(), p.owner.clone()))
            .collect(),
    )
}

/// Where a message for `owner` goes: its newest call in flight as an event
/// stream, else its session's GET stream.
fn reach(state: &ProcessState, owner: &str) -> Option<Dest> {
    let newest = state
        .pending
        .iter()
        .filter(|(_, p)| p.streams && p.from.as_ref().is_some_and(|f| &*f.owner == owner))
        .max_by_key(|(id, _)| **id);
    if let Some((_, p)) = newest {
        return Some(Dest::Post(p.reply.clone(), owner.into()));
    }
    live_sessions(state)
        .into_iter()
        .find(|s| &*s.party().owner == owner)
        .map(Dest::Stream)
}
