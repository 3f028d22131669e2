//! Stdio upstreams (issue 15) through the gateway binary with its built-in
//! authorization server: real stdio MCP servers it starts itself
//! (`@modelcontextprotocol/server-everything` in stdio mode, the PyPI
//! `mcp-server-time`, and `tests/fixtures/stdio_server.py` on the official
//! Python SDK), reached over real HTTP with client_credentials tokens.
//! Process checks read `/proc`: which processes live, whose child they
//! are, and whether any is a zombie.

mod common;

use common::binary::Binary;
use common::e2e::{ensure_setup, everything_stdio_target, venv_python};
use common::free_port;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const OPERATOR: &str = "an-initial-access-token-for-the-stdio-tests";

/// The gateway binary in front of the stdio servers, one upstream each:
/// - `/everything/mcp`: server-everything, one process per session;
/// - `/notes/mcp`: the fixture per session, told its caller;
/// - `/subject-notes/mcp`: the fixture, one process per subject;
/// - `/limited/mcp`: the fixture, at most 2 processes, idle after 2 s,
///   2 s to answer;
/// - `/shared/mcp`: the fixture, one process for everyone;
/// - `/shared-once/mcp`: the same, for one test of its own;
/// - `/mute/mcp`: the fixture that never answers, 1 s to start;
/// - `/time/mcp`: mcp-server-time from PyPI.
struct StdioGateway {
    gw: Binary,
    metrics_port: u16,
    /// Marks every fixture process's command line, to find them in /proc.
    marker: String,
    data_dir: PathBuf,
    http: reqwest::Client,
}

fn fixture() -> String {
    format!(
        "{}/tests/fixtures/stdio_server.py",
        env!("CARGO_MANIFEST_DIR")
    )
}

impl StdioGateway {
    async fn start() -> Self {
        ensure_setup();
        let port = free_port();
        let marker = format!("--marker=stdio-test-{}-{port}", std::process::id());
        let data_dir =
            std::env::temp_dir().join(format!("mcpgw-stdio-{}-{port}", std::process::id()));
        let python = venv_python();
        let fixture = |name: &str, extra: &str| {
            format!(
                "    command: ['{py}', '{script}', '{marker}-{name}'{extra}]\n    policy: {{ base_scopes: [mcp], unlisted_tools: base }}\n",
                py = python.display(),
                script = fixture(),
            )
        };
        let time = python.with_file_name("mcp-server-time");
        let yaml = format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
authorization_server:
  data_dir: '{dir}'
  registration: initial_access_token
  initial_access_token: {OPERATOR}
  # Every caller of these tests is a client of its own.
  registration_rate_limit: {{ per_hour: 0 }}
upstreams:
  - name: everything
    path: /everything/mcp
{everything}    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
  - name: notes
    path: /notes/mcp
{notes}    caller_env: true
    env: {{ NOTE_PREFIX: set-by-config }}
  - name: subject-notes
    path: /subject-notes/mcp
{subject_notes}    isolation: per_subject
  - name: limited
    path: /limited/mcp
{limited}    max_processes: 2
    idle_timeout: 2s
    timeouts: {{ response: 2s }}
  - name: shared
    path: /shared/mcp
{shared}    isolation: shared
  - name: shared-once
    path: /shared-once/mcp
{shared_once}    isolation: shared
  - name: mute
    path: /mute/mcp
{mute}    startup_timeout: 1s
  - name: time
    path: /time/mcp
    command: ['{time}', --local-timezone, UTC]
    policy: {{ base_scopes: [mcp], unlisted_tools: base }}
",
            dir = data_dir.display(),
            everything = everything_stdio_target(),
            notes = fixture("notes", ""),
            subject_notes = fixture("subject-notes", ""),
            limited = fixture("limited", ""),
            shared = fixture("shared", ""),
            shared_once = fixture("shared-once", ""),
            mute = fixture("mute", ", --mute"),
            time = time.display(),
        );
        let (gw, metrics_port) = Binary::serve_with_metrics(&yaml, port).await;
        Self {
            gw,
            metrics_port,
            marker,
            data_dir,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gw.addr)
    }

    /// A new confidential client (a subject of its own) and its token for
    /// the upstream at `path`.
    async fn caller(&self, path: &str) -> Caller {
        let client: Value = self
            .http
            .post(self.url("/register"))
            .bearer_auth(OPERATOR)
            .json(&json!({"client_name": "stdio test", "grant_types": ["client_credentials"], "scope": "mcp"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = client["client_id"].as_str().unwrap().to_owned();
        let secret = client["client_secret"].as_str().unwrap().to_owned();
        self.caller_for(path, &id, &secret).await
    }

    /// Another token of the client `id` for the upstream at `path`.
    async fn caller_for(&self, path: &str, id: &str, secret: &str) -> Caller {
        let tokens: Value = self
            .http
            .post(self.url("/token"))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", &self.url(path)),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Caller {
            http: self.http.clone(),
            url: self.url(path),
            token: tokens["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("no token: {tokens}"))
                .to_owned(),
            client: (id.to_owned(), secret.to_owned()),
            session: None,
        }
    }

    /// The value of the metric series `series` (`name{labels}`), 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        common::metric(self.metrics_port, series).await
    }

    /// The fixture processes alive now, by pid: of the upstream `name`,
    /// or of all of them.
    fn fixture_pids(&self, name: Option<&str>) -> Vec<u32> {
        let marker = match name {
            Some(name) => format!("{}-{name} ", self.marker),
            None => self.marker.clone(),
        };
        processes()
            .into_iter()
            .filter(|p| p.cmdline.contains(&marker) && !gone(p.pid))
            .map(|p| p.pid)
            .collect()
    }

    /// Children of the gateway that have exited and were never reaped.
    fn zombie_children(&self) -> Vec<u32> {
        let gateway = self.gw.pid();
        processes()
            .into_iter()
            .filter(|p| p.ppid == gateway && p.state == 'Z')
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for StdioGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// An `initialize` request (id 1, MCP 2025-06-18) declaring `capabilities`.
fn initialize_request(capabilities: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": capabilities,
        "clientInfo": {"name": "stdio-test", "version": "1"}}})
}

/// A client's `notifications/cancelled` of its request `id`.
fn cancellation(id: &str, reason: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": id, "reason": reason}})
}

/// One MCP client: a token for one upstream, and its session once
/// initialized.
struct Caller {
    http: reqwest::Client,
    url: String,
    token: String,
    client: (String, String),
    session: Option<String>,
}

impl Caller {
    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .json(body);
        if let Some(s) = &self.session {
            req = req.header("mcp-session-id", s);
        }
        req
    }

    /// `initialize` (declaring sampling), then `notifications/initialized`.
    async fn initialize(&mut self) -> Value {
        let resp = self
            .post(
                &json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "stdio-test", "version": "1"}}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "initialize");
        self.session = Some(
            resp.headers()["mcp-session-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["id"], "init", "the client's id comes back: {answer}");
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        answer
    }

    /// Calls `tool` and returns its text (or the error of the answer).
    async fn call(&self, tool: &str, arguments: Value) -> Result<String, Value> {
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "tools/call {tool}");
        let mut events = Events::of(resp);
        let answer = events.next().await.expect("an answer");
        assert_eq!(answer["id"], 7, "{answer}");
        match answer["result"]["content"][0]["text"].as_str() {
            Some(text) => Ok(text.to_owned()),
            None => Err(answer),
        }
    }

    /// A `tools/call` of `tool` with `id` and, when given, a progress
    /// token; its event stream.
    async fn start_call(
        &self,
        id: &str,
        tool: &str,
        arguments: Value,
        token: Option<&str>,
    ) -> Events {
        let mut params = json!({"name": tool, "arguments": arguments});
        if let Some(token) = token {
            params["_meta"] = json!({"progressToken": token});
        }
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "tools/call {tool}");
        Events::of(resp)
    }

    /// A POST as a stateless (MCP 2026-07-28) client sends it.
    fn stateless(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self.post(body).header("mcp-protocol-version", "2026-07-28");
        if let Some(method) = body["method"].as_str() {
            req = req.header("mcp-method", method);
        }
        if let Some(name) = body["params"]["name"].as_str() {
            req = req.header("mcp-name", name);
        }
        req
    }

    async fn pid(&self) -> u32 {
        let me: Value =
            serde_json::from_str(&self.call("whoami", json!({})).await.unwrap()).unwrap();
        me["pid"].as_u64().unwrap() as u32
    }

    async fn delete(&self) -> u16 {
        self.http
            .delete(&self.url)
            .bearer_auth(&self.token)
            .header("mcp-session-id", self.session.as_deref().unwrap())
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

/// The JSON-RPC messages of an event stream, one per event.
struct Events {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl Events {
    fn of(resp: reqwest::Response) -> Self {
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "an event stream"
        );
        Self {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next message, `None` when the stream ends (10 s at most).
    async fn next(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).unwrap();
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                return Some(serde_json::from_str(&data).unwrap());
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.unwrap()),
                Ok(None) => return None,
                Err(_) => panic!("no event within 10 s"),
            }
        }
    }
}

/// A process as `/proc` tells it.
struct Process {
    pid: u32,
    ppid: u32,
    state: char,
    cmdline: String,
}

fn processes() -> Vec<Process> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces.
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut fields = rest.split(' ');
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some(Process {
                pid,
                ppid,
                state,
                cmdline,
            })
        })
        .collect()
}

/// Whether `pid` is gone: exited and reaped, or a zombie that is not the
/// gateway's to reap (a grandchild left to init).
fn gone(pid: u32) -> bool {
    let gateway = std::process::id();
    processes()
        .iter()
        .find(|p| p.pid == pid)
        .is_none_or(|p| p.state == 'Z' && p.ppid != gateway && !is_gateway(p.ppid))
}

/// Whether `pid` is a gateway binary (the test's children).
fn is_gateway(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .is_ok_and(|exe| exe.ends_with("mcp-oauth-gateway"))
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdio_upstreams_behave_like_http_ones_and_leave_no_process_behind() {
    let mut s = StdioGateway::start().await;
    two_callers_get_two_processes_and_neither_sees_the_others_notes(&s).await;
    one_subjects_sessions_share_a_process_and_another_subject_gets_its_own(&s).await;
    a_sampling_request_from_the_server_is_answered_by_the_client(&s).await;
    what_the_server_sends_outside_a_call_arrives_on_the_get_stream(&s).await;
    delete_stops_the_process_and_what_it_started(&s).await;
    an_idle_process_is_stopped_and_its_session_ends(&s).await;
    a_process_that_keeps_talking_to_an_idle_client_is_still_idle(&s).await;
    a_crash_mid_call_answers_the_call_with_an_error_and_ends_the_session(&s).await;
    an_exit_is_seen_even_while_a_descendant_holds_stdout_open(&s).await;
    a_server_that_never_answers_initialize_gets_504_and_is_stopped(&s).await;
    sessions_past_max_processes_get_503_with_retry_after(&s).await;
    a_shared_process_answers_each_caller_its_own_request_under_the_same_id(&s).await;
    a_shared_process_sends_its_requests_and_progress_only_to_the_caller_they_belong_to(&s).await;
    a_client_that_does_not_read_never_holds_up_the_others(&s).await;
    a_shared_process_never_tells_the_last_caller_what_may_be_anothers(&s).await;
    mcp_server_time_from_pypi_answers(&s).await;
    malformed_and_misplaced_requests_are_refused_and_change_nothing(&s).await;
    stateless_clients_reach_one_process_per_caller(&s).await;
    stateless_callers_of_a_shared_process_cannot_cancel_each_others_calls(&s).await;
    a_call_unanswered_within_the_response_timeout_gets_an_error_and_is_cancelled(&s).await;
    exited_processes_leave_no_pipe_open_in_the_gateway(&s).await;
    cancellations_reach_the_process_and_end_the_wait(&s).await;
    processes_are_counted_by_upstream_and_exit_reason(&s).await;

    wait_until("every exited child is reaped", || {
        s.zombie_children().is_empty()
    })
    .await;
    assert!(!s.fixture_pids(None).is_empty(), "some sessions still run");
    s.gw.signal("TERM");
    wait_until("the gateway exits on SIGTERM", || !s.gw.running()).await;
    wait_until("no stdio process outlives the gateway", || {
        s.fixture_pids(None).is_empty()
    })
    .await;
}

/// Isolation `per_session`: two callers, two processes; one's notes are
/// never the other's. The child's environment is what the configuration
/// lists (inherited `PATH`, `HOME`, `LANG`; `env`; the caller), nothing of
/// the gateway's own (its `RUST_LOG`).
async fn two_callers_get_two_processes_and_neither_sees_the_others_notes(s: &StdioGateway) {
    let mut a = s.caller("/notes/mcp").await;
    let mut b = s.caller("/notes/mcp").await;
    a.initialize().await;
    b.initialize().await;
    assert_eq!(
        a.call("remember", json!({"note": "a1"})).await.unwrap(),
        "1 note(s)"
    );
    assert_eq!(
        b.call("remember", json!({"note": "b1"})).await.unwrap(),
        "1 note(s)"
    );
    assert_eq!(a.call("recall", json!({})).await.unwrap(), "a1");
    assert_eq!(b.call("recall", json!({})).await.unwrap(), "b1");
    assert_ne!(a.pid().await, b.pid().await);
    let me: Value = serde_json::from_str(&a.call("whoami", json!({})).await.unwrap()).unwrap();
    let env = me["env"].as_object().unwrap();
    assert_eq!(env["NOTE_PREFIX"], "set-by-config");
    assert_eq!(env["MCP_GATEWAY_SUBJECT"], a.client.0.as_str());
    assert_eq!(env["MCP_GATEWAY_CLIENT_ID"], a.client.0.as_str());
    assert_eq!(env["MCP_GATEWAY_SCOPES"], "mcp");
    assert!(
        !env.contains_key("RUST_LOG"),
        "the gateway's own environment stays out: {env:?}"
    );
    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    for name in &names {
        assert!(
            ["PATH", "HOME", "LANG", "NOTE_PREFIX"].contains(name)
                || name.starts_with("MCP_GATEWAY_")
                // What Python itself sets in its own environment.
                || name.starts_with("LC_"),
            "unexpected variable {name} in {names:?}"
        );
    }
    // The other caller's session id is not theirs to use.
    let mut stolen = s.caller("/notes/mcp").await;
    stolen.session = a.session.clone();
    let resp = stolen
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "recall", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a session belongs to its subject");
    assert_eq!(a.delete().await, 200);
    assert_eq!(b.delete().await, 200);
}

/// Isolation `per_subject`: a second session of the same subject reaches
/// the same process (and its notes); another subject gets its own.
async fn one_subjects_sessions_share_a_process_and_another_subject_gets_its_own(s: &StdioGateway) {
    let mut first = s.caller("/subject-notes/mcp").await;
    let (id, secret) = first.client.clone();
    let mut second = s.caller_for("/subject-notes/mcp", &id, &secret).await;
    let mut other = s.caller("/subject-notes/mcp").await;
    first.initialize().await;
    second.initialize().await;
    other.initialize().await;
    assert_ne!(first.session, second.session, "two sessions");
    first
        .call("remember", json!({"note": "mine"}))
        .await
        .unwrap();
    assert_eq!(second.call("recall", json!({})).await.unwrap(), "mine");
    assert_eq!(other.call("recall", json!({})).await.unwrap(), "");
    assert_eq!(first.pid().await, second.pid().await);
    assert_ne!(first.pid().await, other.pid().await);
}

/// The server's `sampling/createMessage` reaches the client on the stream
/// of the call that caused it; the client's answer, POSTed back, reaches
/// the server, whose tool result then carries it.
async fn a_sampling_request_from_the_server_is_answered_by_the_client(s: &StdioGateway) {
    let mut c = s.caller("/everything/mcp").await;
    c.initialize().await;
    let resp = c
        .post(&json!({"jsonrpc": "2.0", "id": "call-1", "method": "tools/call", "params": {
            "name": "trigger-sampling-request", "arguments": {"prompt": "say hi", "maxTokens": 5}}}))
        .send()
        .await
        .unwrap();
    let mut events = Events::of(resp);
    let asked = loop {
        let m = events.next().await.expect("the sampling request");
        if m["method"] == "sampling/createMessage" {
            break m;
        }
    };
    let answer = c
        .post(&json!({"jsonrpc": "2.0", "id": asked["id"], "result": {
            "role": "assistant", "content": {"type": "text", "text": "hello from the test client"},
            "model": "test-model", "stopReason": "endTurn"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let result = loop {
        let m = events.next().await.expect("the tool result");
        if m["id"] == "call-1" {
            break m;
        }
    };
    let text = result["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("hello from the test client"), "{result}");
    assert!(
        events.next().await.is_none(),
        "the stream ends after the answer"
    );
    // An answer to a request nobody asked is dropped, not written.
    let stray = c
        .post(&json!({"jsonrpc": "2.0", "id": 999_999, "result": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(stray.status(), 202);
    assert_eq!(
        c.call("echo", json!({"message": "still here"}))
            .await
            .unwrap(),
        "Echo: still here"
    );
}

/// Messages outside any call (server-everything announces its tools
/// changed once initialized) go to the session's GET stream; a second GET
/// stream is refused.
async fn what_the_server_sends_outside_a_call_arrives_on_the_get_stream(s: &StdioGateway) {
    let mut c = s.caller("/everything/mcp").await;
    let resp = c
        .post(&initialize_request(
            json!({"sampling": {}, "elicitation": {}}),
        ))
        .send()
        .await
        .unwrap();
    c.session = Some(
        resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned(),
    );
    let get = |c: &Caller| {
        c.http
            .get(&c.url)
            .bearer_auth(&c.token)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", c.session.as_deref().unwrap())
            .send()
    };
    let mut stream = Events::of(get(&c).await.unwrap());
    assert_eq!(
        get(&c).await.unwrap().status(),
        409,
        "one GET stream per session"
    );
    let resp = c
        .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let m = stream.next().await.expect("a notification");
    assert_eq!(m["method"], "notifications/tools/list_changed", "{m}");
    assert_eq!(c.delete().await, 200);
    while stream.next().await.is_some() {}
}

/// DELETE ends the session and stops its process group: the process and
/// the child it started are gone; the session id is then unknown.
async fn delete_stops_the_process_and_what_it_started(s: &StdioGateway) {
    let mut c = s.caller("/notes/mcp").await;
    c.initialize().await;
    let pid = c.pid().await;
    let child: u32 = c
        .call("spawn_child", json!({}))
        .await
        .unwrap()
        .parse()
        .unwrap();
    assert!(!gone(child));
    assert_eq!(c.delete().await, 200);
    wait_until("the process stops on DELETE", || gone(pid)).await;
    wait_until("its child stops with it", || gone(child)).await;
    assert_eq!(c.delete().await, 404, "the session is gone");
}

/// A process without requests for its `idle_timeout` is stopped; its
/// session ends (404), and the client starts a new one.
async fn an_idle_process_is_stopped_and_its_session_ends(s: &StdioGateway) {
    let mut c = s.caller("/limited/mcp").await;
    c.initialize().await;
    let pid = c.pid().await;
    wait_until("the idle process stops", || gone(pid)).await;
    let resp = c
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    c.initialize().await;
    assert_ne!(c.pid().await, pid, "a new process for the new session");
    assert_eq!(c.delete().await, 200);
}

/// Idle means no word from the client: a process that keeps sending
/// notifications to a client that says nothing is still stopped after
/// `idle_timeout`.
async fn a_process_that_keeps_talking_to_an_idle_client_is_still_idle(s: &StdioGateway) {
    wait_until("a slot of `limited` is free", || {
        s.fixture_pids(Some("limited")).len() < 2
    })
    .await;
    let mut c = s.caller("/limited/mcp").await;
    c.initialize().await;
    let pid = c.pid().await;
    assert_eq!(
        c.call("chatter", json!({"every": 0.3})).await.unwrap(),
        "chatting"
    );
    wait_until("the chatty but idle process stops", || gone(pid)).await;
}

/// A process that dies mid-call: the call is answered with a JSON-RPC
/// error, and the session ends (404) so the client re-initializes.
async fn a_crash_mid_call_answers_the_call_with_an_error_and_ends_the_session(s: &StdioGateway) {
    let mut c = s.caller("/notes/mcp").await;
    c.initialize().await;
    let pid = c.pid().await;
    let error = c.call("crash", json!({})).await.unwrap_err();
    assert_eq!(error["error"]["code"], -32603, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ended before answering"),
        "{error}"
    );
    wait_until("the crashed process is reaped", || gone(pid)).await;
    let resp = c
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], 1, "{body}");
    c.initialize().await;
    assert_eq!(c.call("recall", json!({})).await.unwrap(), "");
}

/// A process that exits while something it started (in a session of
/// its own, out of the process group's reach) still holds its stdout:
/// the exit itself ends the session, the call gets its error, and the
/// slot is free again.
async fn an_exit_is_seen_even_while_a_descendant_holds_stdout_open(s: &StdioGateway) {
    let mut c = s.caller("/notes/mcp").await;
    c.initialize().await;
    let error = c
        .call("orphan_stdout", json!({"seconds": 297.25}))
        .await
        .unwrap_err();
    assert_eq!(error["error"]["code"], -32603, "{error}");
    let resp = c
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the session ended with the process");
    let _ = std::process::Command::new("pkill")
        .args(["-f", "sleep 297.25"])
        .status();
}

/// `initialize` unanswered within `startup_timeout`: 504 with a JSON-RPC
/// error, no session, and the process is stopped.
async fn a_server_that_never_answers_initialize_gets_504_and_is_stopped(s: &StdioGateway) {
    let c = s.caller("/mute/mcp").await;
    let started = Instant::now();
    let resp = c.post(&initialize_request(json!({}))).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(resp.headers().get("mcp-session-id").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32002, "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_until("the mute process is stopped", || {
        s.fixture_pids(Some("mute")).is_empty()
    })
    .await;
    // A failed start backs the next one off (1 s after the first failure).
    let again = c.post(&initialize_request(json!({}))).send().await.unwrap();
    assert_eq!(again.status(), 503, "backing off after a failed start");
    assert_eq!(again.headers()["retry-after"], "1");
    assert!(
        s.fixture_pids(Some("mute")).is_empty(),
        "nothing started meanwhile"
    );
    // The backoff is the failing subject's: another caller's start is
    // tried (a client's own bad `initialize` cannot lock others out).
    let other = s.caller("/mute/mcp").await;
    let tried = other
        .post(&initialize_request(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(tried.status(), 504, "another subject's start is tried");
}

/// `max_processes` bounds the processes: a flood of sessions gets exactly
/// that many, the rest 503 with `Retry-After`; a DELETE frees a slot.
async fn sessions_past_max_processes_get_503_with_retry_after(s: &StdioGateway) {
    wait_until("no process of the earlier tests holds a slot", || {
        s.fixture_pids(Some("limited")).is_empty()
    })
    .await;
    let mut callers = Vec::new();
    for _ in 0..8 {
        callers.push(s.caller("/limited/mcp").await);
    }
    let init = initialize_request(json!({}));
    let answers =
        futures_util::future::join_all(callers.iter().map(|c| c.post(&init).send())).await;
    let mut started = Vec::new();
    let mut busy = 0;
    for (i, resp) in answers.into_iter().enumerate() {
        let resp = resp.unwrap();
        match resp.status().as_u16() {
            200 => {
                let id = resp.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                started.push((i, id));
            }
            503 => {
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
                let body: Value = resp.json().await.unwrap();
                assert_eq!(body["error"]["code"], -32001, "{body}");
                busy += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        (started.len(), busy),
        (2, 6),
        "exactly max_processes sessions"
    );
    assert_eq!(
        s.fixture_pids(Some("limited")).len(),
        2,
        "two processes, no more"
    );
    let (i, id) = &started[0];
    callers[*i].session = Some(id.clone());
    assert_eq!(callers[*i].delete().await, 200);
    let next = s.caller("/limited/mcp").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next.post(&init).send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "a slot frees after DELETE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Isolation `shared`: one process serves every caller, so the bridge
/// numbers their requests itself; many callers racing with the same
/// request id each get the answer to their own request.
async fn a_shared_process_answers_each_caller_its_own_request_under_the_same_id(s: &StdioGateway) {
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut c = s.caller("/shared/mcp").await;
        c.initialize().await;
        callers.push(c);
    }
    let mut pids: Vec<u32> = Vec::new();
    for c in &callers {
        pids.push(c.pid().await);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one process for everyone");
    let calls = callers.iter().enumerate().flat_map(|(i, c)| {
        (0..10).map(move |n| async move {
            let text = format!("caller {i} call {n}");
            (
                text.clone(),
                c.call("echo", json!({"text": text})).await.unwrap(),
            )
        })
    });
    for (asked, answered) in futures_util::future::join_all(calls).await {
        assert_eq!(answered, asked);
    }
}

/// A shared process serves several users, so what it sends goes only
/// where it can be told whose it is: a request (sampling) names no
/// caller, so it is refused while two users have sessions on the process;
/// progress reaches the call whose token it carries (each caller's token,
/// the same text or not, is its own), and progress for a token nobody
/// sent reaches nobody.
async fn a_shared_process_sends_its_requests_and_progress_only_to_the_caller_they_belong_to(
    s: &StdioGateway,
) {
    let mut a = s.caller("/shared/mcp").await;
    let mut b = s.caller("/shared/mcp").await;
    a.initialize().await;
    b.initialize().await;
    let refused = a.call("ask", json!({})).await.unwrap();
    assert!(
        refused.starts_with("refused:"),
        "a request of a process serving two users reaches neither ({refused})"
    );

    let mut b_waits = b
        .start_call(
            "b-slow",
            "slow",
            json!({"name": "b", "seconds": 4}),
            Some("same"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut progressing = a
        .start_call("a-progress", "progress", json!({"steps": 3}), Some("same"))
        .await;
    for step in 1..=3 {
        let m = progressing.next().await.unwrap();
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "same", "{m}");
        assert_eq!(m["params"]["progress"], step, "{m}");
    }
    assert_eq!(progressing.next().await.unwrap()["id"], "a-progress");
    assert_eq!(a.call("stray_progress", json!({})).await.unwrap(), "sent");
    let first = b_waits.next().await.unwrap();
    assert_eq!(
        first["id"], "b-slow",
        "b's stream carries its answer and nothing of a's: {first}"
    );
    assert_eq!(first["result"]["content"][0]["text"], "done", "{first}");
}

/// Once a shared process has served two users, what it sends unaddressed
/// reaches neither, even after one of them left: it may be about the
/// other's work (a subscription, a background job).
async fn a_shared_process_never_tells_the_last_caller_what_may_be_anothers(s: &StdioGateway) {
    let mut a = s.caller("/shared-once/mcp").await;
    let mut b = s.caller("/shared-once/mcp").await;
    a.initialize().await;
    b.initialize().await;
    assert_eq!(b.delete().await, 200);
    let refused = a.call("ask", json!({})).await.unwrap();
    assert!(
        refused.starts_with("refused:"),
        "the process served two users; a request naming none reaches no one ({refused})"
    );
}

/// A client that stops reading its stream does not stall the process for
/// everyone else: what it cannot take is dropped, and the others' calls
/// are answered meanwhile.
async fn a_client_that_does_not_read_never_holds_up_the_others(s: &StdioGateway) {
    let mut a = s.caller("/shared/mcp").await;
    let mut b = s.caller("/shared/mcp").await;
    a.initialize().await;
    b.initialize().await;
    let unread = a
        .post(
            &json!({"jsonrpc": "2.0", "id": "flood", "method": "tools/call",
            "params": {"name": "flood", "arguments": {"count": 20000, "size": 2000}}}),
        )
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.call("echo", json!({"text": "still answered"}))
            .await
            .unwrap(),
        "still answered"
    );
    drop(unread);
    assert_eq!(
        a.call("echo", json!({"text": "a too"})).await.unwrap(),
        "a too"
    );
}

/// A stateless (MCP 2026-07-28) client's `tools/call` of `tool`; the text
/// of its answer.
async fn stateless_call(c: &Caller, tool: &str, arguments: Value) -> String {
    let resp = c
        .stateless(&json!({"jsonrpc": "2.0", "id": "s", "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "stateless {tool}");
    assert!(resp.headers().get("mcp-session-id").is_none(), "no session");
    let answer = Events::of(resp).next().await.unwrap();
    assert_eq!(answer["id"], "s", "{answer}");
    answer["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// MCP 2026-07-28 clients send no `initialize` and no session id: each
/// caller's requests go to one process of its own, which the bridge
/// initialized itself. That process serves every client of the subject,
/// so its environment names the subject but no client or scopes.
async fn stateless_clients_reach_one_process_per_caller(s: &StdioGateway) {
    let a = s.caller("/notes/mcp").await;
    let b = s.caller("/notes/mcp").await;
    stateless_call(&a, "remember", json!({"note": "stateless"})).await;
    assert_eq!(
        stateless_call(&a, "recall", json!({})).await,
        "stateless",
        "the same process"
    );
    assert_eq!(
        stateless_call(&b, "recall", json!({})).await,
        "",
        "another caller, another process"
    );
    let me = |text: String| serde_json::from_str::<Value>(&text).unwrap();
    let (a_me, b_me) = (
        me(stateless_call(&a, "whoami", json!({})).await),
        me(stateless_call(&b, "whoami", json!({})).await),
    );
    assert_ne!(a_me["pid"], b_me["pid"]);
    let env = a_me["env"].as_object().unwrap();
    assert_eq!(env["MCP_GATEWAY_SUBJECT"], a.client.0.as_str());
    assert!(
        !env.contains_key("MCP_GATEWAY_CLIENT_ID") && !env.contains_key("MCP_GATEWAY_SCOPES"),
        "a subject's process tells no one client's scopes: {env:?}"
    );
    let old = a
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .header("mcp-protocol-version", "2025-11-25")
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        400,
        "a session-based client still needs its session"
    );
}

/// Stateless callers of a shared process are told apart by subject: one
/// caller's cancellation naming another caller's request id (the same
/// text) cancels nothing of the other's.
async fn stateless_callers_of_a_shared_process_cannot_cancel_each_others_calls(s: &StdioGateway) {
    let a = s.caller("/shared/mcp").await;
    let b = s.caller("/shared/mcp").await;
    let resp = b
        .stateless(&json!({"jsonrpc": "2.0", "id": "s", "method": "tools/call",
            "params": {"name": "slow", "arguments": {"name": "stateless-b", "seconds": 2}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut b_events = Events::of(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = a
        .stateless(&cancellation("s", "not mine to cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let answer = b_events.next().await.expect("b's call is still answered");
    assert_eq!(answer["result"]["content"][0]["text"], "done", "{answer}");
    assert!(!stateless_call(&a, "cancellations", json!({}))
        .await
        .contains("stateless-b"));
}

/// `timeouts.response` bounds how long a call may go without a word from
/// the process: then it is answered with an error, and cancelled at the
/// process.
async fn a_call_unanswered_within_the_response_timeout_gets_an_error_and_is_cancelled(
    s: &StdioGateway,
) {
    let mut c = s.caller("/limited/mcp").await;
    wait_until("a slot of `limited` is free", || {
        s.fixture_pids(Some("limited")).len() < 2
    })
    .await;
    c.initialize().await;
    let error = c
        .call("slow", json!({"name": "timed-out", "seconds": 30}))
        .await
        .unwrap_err();
    assert_eq!(error["error"]["code"], -32002, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no answer within 2s"),
        "{error}"
    );
    assert_eq!(
        c.call("cancellations", json!({})).await.unwrap(),
        "timed-out",
        "the process heard the call is cancelled"
    );
    assert_eq!(c.delete().await, 200);
}

/// The gateway's ends of the pipes to a process close when it exits, for
/// stateless callers' processes too (a process kept in a map after its
/// exit would keep its stdin open).
async fn exited_processes_leave_no_pipe_open_in_the_gateway(s: &StdioGateway) {
    // The pipes the gateway holds, by inode.
    let pipes = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(format!("/proc/{}/fd", s.gw.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|target| target.to_string_lossy().into_owned())
            .filter(|target| target.starts_with("pipe:"))
            .collect()
    };
    wait_until("no process of `limited` runs", || {
        s.fixture_pids(Some("limited")).is_empty()
    })
    .await;
    let before = pipes();
    for _ in 0..2 {
        let c = s.caller("/limited/mcp").await;
        stateless_call(&c, "remember", json!({"note": "n"})).await;
    }
    assert_eq!(s.fixture_pids(Some("limited")).len(), 2);
    assert!(pipes().difference(&before).count() >= 6, "3 pipes each");
    wait_until("the idle processes stop", || {
        s.fixture_pids(Some("limited")).is_empty()
    })
    .await;
    wait_until("their pipes are closed", || pipes().is_subset(&before)).await;
}

/// A client that cancels its call (MCP "Cancellation") gets no answer and
/// its POST stream ends; one that just leaves has its call cancelled for
/// it. Either way the process hears of it, under its own request id.
async fn cancellations_reach_the_process_and_end_the_wait(s: &StdioGateway) {
    let mut c = s.caller("/notes/mcp").await;
    c.initialize().await;
    let slow = |name: &str| {
        c.post(
            &json!({"jsonrpc": "2.0", "id": format!("call-{name}"), "method": "tools/call",
            "params": {"name": "slow", "arguments": {"name": name}}}),
        )
        .send()
    };
    let cancelled = || async { c.call("cancellations", json!({})).await.unwrap() };

    let resp = slow("cancelled").await.unwrap();
    let mut events = Events::of(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancel = c
        .post(&cancellation(
            "call-cancelled",
            "the user changed their mind",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    assert!(
        events.next().await.is_none(),
        "the stream ends without an answer"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while cancelled().await != "cancelled" {
        assert!(
            Instant::now() < deadline,
            "the process saw the cancellation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let resp = slow("left").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cancelled().await != "cancelled,left" {
        assert!(
            Instant::now() < deadline,
            "the call of a client that left is cancelled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.delete().await, 200);
}

/// Processes running, started and ended by reason, per upstream.
async fn processes_are_counted_by_upstream_and_exit_reason(s: &StdioGateway) {
    let exits = |upstream: &'static str, reason: &'static str| async move {
        s.metric(&format!(
            "mcpgw_stdio_process_exits_total{{reason=\"{reason}\",upstream=\"{upstream}\"}}"
        ))
        .await
    };
    assert!(exits("notes", "crashed").await >= 1.0);
    assert!(exits("notes", "deleted").await >= 3.0);
    assert!(exits("limited", "idle").await >= 1.0);
    assert_eq!(exits("mute", "startup_timeout").await, 2.0);
    assert_eq!(
        s.metric("mcpgw_stdio_process_starts_total{upstream=\"shared\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("mcpgw_stdio_processes{upstream=\"shared\"}").await,
        1.0
    );
}

/// A Python stdio server from PyPI, unmodified.
async fn mcp_server_time_from_pypi_answers(s: &StdioGateway) {
    let mut c = s.caller("/time/mcp").await;
    c.initialize().await;
    let text = c
        .call("get_current_time", json!({"timezone": "Europe/Warsaw"}))
        .await
        .unwrap();
    let now: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(now["timezone"], "Europe/Warsaw", "{now}");
    assert_eq!(c.delete().await, 200);
}

/// Requests the bridge cannot serve get a clear status and JSON-RPC error,
/// and the session they named keeps working.
async fn malformed_and_misplaced_requests_are_refused_and_change_nothing(s: &StdioGateway) {
    let mut c = s.caller("/notes/mcp").await;
    c.initialize().await;
    c.call("remember", json!({"note": "kept"})).await.unwrap();
    let session = c.session.take();
    let no_session = c
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), 400, "a session is needed");
    let body: Value = no_session.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32600, "{body}");
    c.session = Some("not-a-session".into());
    let unknown = c
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    c.session = session;
    let batch = json!([
        initialize_request(json!({})),
        {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    ]);
    assert_eq!(
        c.post(&batch).send().await.unwrap().status(),
        400,
        "initialize alone"
    );
    let duplicate = c
        .http
        .post(&c.url)
        .bearer_auth(&c.token)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 400, "duplicate keys are refused");
    // Pretty-printed JSON (line breaks between tokens) still reaches the
    // process as one line.
    let pretty = c
        .http
        .post(&c.url)
        .bearer_auth(&c.token)
        .header("mcp-session-id", c.session.as_deref().unwrap())
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body("{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 3,\n  \"method\": \"tools/call\",\n  \"params\": {\n    \"name\": \"recall\",\n    \"arguments\": {}\n  }\n}")
        .send()
        .await
        .unwrap();
    assert_eq!(pretty.status(), 200);
    let answer: Value = pretty.json().await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "kept", "{answer}");
    assert_eq!(c.call("recall", json!({})).await.unwrap(), "kept");
    assert_eq!(c.delete().await, 200);
}

/// On a gateway without auth: a POST of `body` to `url` as a client that
/// accepts only JSON, in `session` when given.
fn post_json(
    http: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: &Value,
) -> reqwest::RequestBuilder {
    let req = http
        .post(url)
        .header("accept", "application/json")
        .json(body);
    match session {
        Some(s) => req.header("mcp-session-id", s),
        None => req,
    }
}

/// On a gateway without auth: a new session at `url` (the fixture behind
/// it), and the pid of its process.
async fn session_and_pid(http: &reqwest::Client, url: &str) -> (String, u32) {
    let resp = post_json(http, url, None, &initialize_request(json!({})))
        .send()
        .await
        .unwrap();
    let session = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = post_json(http, url, Some(&session), &whoami_request())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value =
        serde_json::from_str(answer["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    (session, me["pid"].as_u64().unwrap() as u32)
}

fn whoami_request() -> Value {
    json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}})
}

/// A reload that changes a stdio upstream replaces it: the processes of
/// the old one are stopped ("replaced") and its sessions end (404); one
/// that changes nothing about it keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_stdio_upstream_stops_its_processes() {
    ensure_setup();
    let port = free_port();
    let yaml = |idle: &str, name: &str| {
        format!(
            "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
server: {{ config_watch_interval: 200ms }}
auth: {{ disabled: true }}
upstreams:
  - name: {name}
    path: /notes/mcp
    command: ['{py}', '{script}']
    idle_timeout: {idle}
",
            py = venv_python().display(),
            script = fixture(),
        )
    };
    let (gw, metrics_port) = Binary::serve_with_metrics(&yaml("10m", "notes"), port).await;
    let http = reqwest::Client::new();
    let running = "mcpgw_stdio_processes{upstream=\"notes\"}";
    let url = format!("http://127.0.0.1:{port}/notes/mcp");
    let post = |session: Option<&str>, body: Value| post_json(&http, &url, session, &body).send();
    let init = initialize_request(json!({}));
    let whoami = whoami_request();
    let (session, pid) = session_and_pid(&http, &url).await;

    assert_eq!(common::metric(metrics_port, running).await, 1.0);

    // A change elsewhere in the file keeps the upstream and its process.
    gw.rewrite(&format!("{}# a comment\n", yaml("10m", "notes")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        post(Some(&session), whoami.clone()).await.unwrap().status(),
        200
    );
    assert!(!gone(pid));

    gw.rewrite(&yaml("5m", "notes"));
    wait_until("the replaced upstream's process stops", || gone(pid)).await;
    let resp = post(Some(&session), whoami).await.unwrap();
    assert_eq!(resp.status(), 404, "its session ended");
    common::await_metric(metrics_port, running, 0.0, || {
        "the replaced upstream's exited process is still counted".into()
    })
    .await;
    assert_eq!(
        post(None, init).await.unwrap().status(),
        200,
        "the new upstream serves"
    );
}

/// SIGINT (stop now) still stops stdio processes the graceful way: each
/// gets SIGTERM first (the fixture leaves a file when it does), none is
/// killed outright while it would have exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_stdio_processes_with_sigterm_first() {
    ensure_setup();
    let port = free_port();
    let term_log = std::env::temp_dir().join(format!("mcpgw-term-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&term_log).unwrap();
    let yaml = format!(
        "public_url: http://127.0.0.1:{port}
listen: 127.0.0.1:{port}
auth: {{ disabled: true }}
upstreams:
  - name: notes
    path: /notes/mcp
    command: ['{py}', '{script}']
    env: {{ TERM_LOG: '{log}' }}
",
        py = venv_python().display(),
        script = fixture(),
        log = term_log.display(),
    );
    let mut gw = Binary::serve(&yaml, port).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/notes/mcp");
    let mut pids = Vec::new();
    for _ in 0..2 {
        pids.push(session_and_pid(&http, &url).await.1);
    }
    gw.signal("INT");
    wait_until("the gateway exits on SIGINT", || !gw.running()).await;
    for pid in pids {
        assert!(gone(pid), "process {pid} outlived the gateway");
        assert!(
            term_log.join(pid.to_string()).exists(),
            "process {pid} was not sent SIGTERM"
        );
    }
    let _ = std::fs::remove_dir_all(&term_log);
}
