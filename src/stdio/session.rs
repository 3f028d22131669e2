//! An MCP session on a stdio process, and the exchange of one POST: the
//! client's messages on their way in (renumbered, so that one process can
//! serve several clients), the answers and whatever else the process sends
//! the POST on their way out.

use super::message::{self, Kind, Message};
use super::traffic::{lock, Outbound, Party, Pending, Process, Replies, Reply, PROCESS_GONE};
use super::StdioError;
use crate::mcp::codes::UPSTREAM_TIMEOUT;
use bytes::Bytes;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One MCP session: a client's `Mcp-Session-Id` on a process (or, for a
/// stateless client, its subject's standing on one).
pub struct Session {
    id: String,
    party: Party,
    pub(super) process: Arc<Process>,
    /// The session's GET stream, while one is open.
    stream: Mutex<Option<mpsc::Sender<Bytes>>>,
    last_active: Mutex<Instant>,
}

impl Session {
    pub(super) fn new(id: String, party: Party, process: Arc<Process>) -> Self {
        Self {
            id,
            party,
            process,
            stream: Mutex::default(),
            last_active: Mutex::new(Instant::now()),
        }
    }

    /// The `Mcp-Session-Id`.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(super) fn party(&self) -> &Party {
        &self.party
    }

    /// Whether the session has gone `idle` without a POST and without a
    /// GET stream open.
    pub(super) fn is_idle(&self, idle: Duration) -> bool {
        lock(&self.last_active).elapsed() >= idle && !self.is_listening()
    }

    /// Whether its client holds a GET stream open.
    pub(super) fn is_listening(&self) -> bool {
        lock(&self.stream).as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Closes the GET stream, if one is open.
    pub(super) fn close_stream(&self) {
        lock(&self.stream).take();
    }

    /// Writes a POST's messages to the process. Requests get answers on
    /// the returned exchange (`None` when the POST had none), each within
    /// `silence` of the last word from the process about them; `streams`:
    /// the client reads an event stream, which can also carry what the
    /// process sends meanwhile.
    pub async fn send(
        self: &Arc<Self>,
        messages: Vec<Message>,
        streams: bool,
        silence: Duration,
    ) -> Result<Option<Exchange>, StdioError> {
        let process = &self.process;
        let (reply, replies) = Reply::channel();
        let mut asked = Vec::new();
        let mut lines = Vec::new();
        *lock(&self.last_active) = Instant::now();
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
                        // The process sees the bridge's id as the progress
                        // token: clients' own tokens may be the same text.
                        let progress_token = m.param("_meta.progressToken");
                        if progress_token.is_some() {
                            m.set_param("_meta.progressToken", message::number(id));
                        }
                        state.pending.insert(
                            id,
                            Pending {
                                from: Some(self.party.clone()),
                                client_id,
                                progress_token,
                                reply: reply.clone(),
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
                        if method.as_deref() == Some("notifications/cancelled")
                            && !self.cancel(&mut state.pending, &mut m)
                        {
                            continue;
                        }
                    }
                    Kind::Response => {
                        let owner = &self.party.owner;
                        let ours = m
                            .id()
                            .and_then(message::as_number)
                            .filter(|id| state.asked.get(id).is_some_and(|a| a.owner == *owner))
                            .and_then(|id| state.asked.remove(&id));
                        match ours {
                            Some(a) => m.set_id(a.original),
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
        // Made before writing: dropped on a failed write, it takes its
        // requests out of `pending` again.
        let exchange = Exchange {
            replies,
            asked,
            process: process.clone(),
            silence,
            unanswerable: None,
        };
        let written = tokio::time::timeout(silence, async {
            for line in lines {
                if !process.child.send(line).await {
                    return false;
                }
            }
            true
        });
        match written.await {
            Ok(true) => Ok((!exchange.asked.is_empty()).then_some(exchange)),
            Ok(false) => Err(StdioError::SessionGone),
            Err(_) => {
                tracing::warn!(upstream = %process.upstream, pid = process.child.pid, "stdio upstream does not read its stdin; stopping it");
                process.stop("stuck");
                Err(StdioError::Stuck {
                    upstream: process.upstream.clone(),
                    timeout: silence,
                })
            }
        }
    }

    /// The client gives up on its request (MCP "Cancellation"): no answer
    /// will come, so its POST stops waiting, and the process hears of it
    /// under the bridge's id. `false` when the named request is not one of
    /// this owner's in flight (the notification is then dropped).
    fn cancel(
        &self,
        pending: &mut std::collections::HashMap<u64, Pending>,
        m: &mut Message,
    ) -> bool {
        let named = m.param("requestId");
        let ours = pending
            .iter()
            .filter(|(_, p)| {
                p.from.as_ref().is_some_and(|f| f.owner == self.party.owner)
                    && named.as_ref().is_some_and(|n| n.get() == p.client_id.get())
            })
            .map(|(&id, _)| id)
            .max();
        let Some((id, p)) = ours.and_then(|id| pending.remove(&id).map(|p| (id, p))) else {
            return false;
        };
        p.reply.cancelled(id);
        m.set_param("requestId", message::number(id));
        true
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
        let (tx, rx) = mpsc::channel(super::traffic::STREAM_QUEUE);
        *stream = Some(tx);
        Ok(rx)
    }

    /// Queues a message on the GET stream; `false` if none is open. A
    /// client that has left the queue full is not keeping up: its stream
    /// is closed (it reconnects, MCP "Resumability" aside, and sees what
    /// comes next), and the process is not held up.
    pub(super) fn push(&self, bytes: Bytes) -> bool {
        let mut stream = lock(&self.stream);
        let Some(tx) = stream.as_ref() else {
            return false;
        };
        match tx.try_send(bytes) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(upstream = %self.process.upstream, "a session's GET stream is not read; closed");
                stream.take();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stream.take();
                false
            }
        }
    }
}

/// Why a POST's open requests will get no answer from the process.
#[derive(Clone, Copy)]
enum Unanswerable {
    /// The process exited.
    Gone,
    /// No word from the process within the silence allowed.
    Silent,
}

/// The answers to one POST's requests, and what else the process sends its
/// client meanwhile. Dropped before every answer came (the client left),
/// it cancels the requests still open.
pub struct Exchange {
    replies: Replies,
    /// The requests not yet answered: the bridge's id and the client's.
    asked: Vec<(u64, Box<RawValue>)>,
    process: Arc<Process>,
    silence: Duration,
    unanswerable: Option<Unanswerable>,
}

impl Exchange {
    /// The next message for the client, `None` once every request has its
    /// answer. Requests the process can no longer answer (it exited, or
    /// said nothing within the silence allowed) get a JSON-RPC error.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            if self.asked.is_empty() {
                return None;
            }
            if let Some(why) = self.unanswerable {
                return Some(self.unanswered(why));
            }
            match tokio::time::timeout(self.silence, self.replies.recv()).await {
                Ok(Some(Outbound::Answer(id, bytes))) => {
                    self.asked.retain(|(a, _)| *a != id);
                    return Some(bytes);
                }
                Ok(Some(Outbound::Other(bytes))) => return Some(bytes),
                Ok(Some(Outbound::Cancelled(id))) => self.asked.retain(|(a, _)| *a != id),
                Ok(None) => self.unanswerable = Some(Unanswerable::Gone),
                Err(_) => {
                    self.cancel_open("the gateway's response timeout passed");
                    self.unanswerable = Some(Unanswerable::Silent);
                }
            }
        }
    }

    /// A JSON-RPC error for the first request that gets no answer.
    fn unanswered(&mut self, why: Unanswerable) -> Bytes {
        let (_, client_id) = self.asked.remove(0);
        let upstream = &self.process.upstream;
        let error = match why {
            Unanswerable::Gone => {
                let reason = lock(&self.process.stopped_for).unwrap_or("it exited");
                let text = format!("upstream `{upstream}` ended before answering ({reason})");
                (PROCESS_GONE, text)
            }
            Unanswerable::Silent => {
                let text = format!(
                    "upstream `{upstream}` sent no answer within {:?} (timeouts.response); the request was cancelled",
                    self.silence
                );
                (UPSTREAM_TIMEOUT, text)
            }
        };
        Message::response(client_id, Err((error.0, &error.1))).to_bytes()
    }

    /// Tells the process the requests still open are cancelled, and stops
    /// waiting for them.
    fn cancel_open(&self, reason: &str) {
        let mut state = lock(&self.process.state);
        if state.exited {
            return;
        }
        for (id, _) in &self.asked {
            if state.pending.remove(id).is_none() {
                continue;
            }
            let cancel = Message::notification(
                "notifications/cancelled",
                serde_json::json!({"requestId": id, "reason": reason}),
            );
            // Best effort: a full stdin queue means the process is stuck.
            self.process.child.try_send(cancel.to_bytes());
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.asked.is_empty() && self.unanswerable.is_none() {
            self.cancel_open("the client disconnected");
        }
    }
}
