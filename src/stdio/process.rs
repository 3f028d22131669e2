//! One child process of a stdio upstream: started without a shell, with
//! only its configured environment, in a process group of its own (so
//! stopping it reaches whatever it started, `npx`'s node included); its
//! stdin fed by a writer task, its stdout read as lines, its stderr logged
//! at a bounded rate. Every group still running is remembered, so the
//! gateway can end them all when it exits.

use crate::config::StdioCommand;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdout, Command};
use tokio::sync::{mpsc, watch};

/// How long a process has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Longest line read from a process's stdout (one JSON-RPC message).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Longest stderr line logged; the rest is cut.
const MAX_STDERR_LINE: usize = 2048;

/// Lines of a process logged per second (stderr, stray stdout); the others
/// are counted.
const LOG_LINES_PER_SECOND: u32 = 20;

/// Process groups started and not yet known to be gone.
static LIVE_GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// A running child: its stdin, its group, and news of its exit.
pub struct Child {
    /// Its process id, which is also its process group id.
    pub pid: i32,
    stdin: mpsc::Sender<Bytes>,
    exited: watch::Receiver<Option<ExitStatus>>,
}

impl Child {
    /// Starts `spec` with `extra_env` added to its environment, for the
    /// upstream `upstream`. Returns the child and its stdout.
    pub fn spawn(
        spec: &StdioCommand,
        extra_env: &[(&str, String)],
        upstream: &str,
    ) -> std::io::Result<(Arc<Self>, Lines)> {
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Not killed when the runtime drops it at exit: every group is
            // stopped the graceful way then (`stop_all_now`).
            .process_group(0);
        if let Some(dir) = &spec.cwd {
            command.current_dir(dir);
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| std::io::Error::other("the child exited at once"))?;
        lock_groups().insert(pid);
        let (stdin, stdout, stderr) =
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => (i, o, e),
                _ => return Err(std::io::Error::other("the child's pipes were not set up")),
            };
        let (to_stdin, from_gateway) = mpsc::channel(256);
        let (exit_tx, exited) = watch::channel(None);
        tokio::spawn(write_stdin(stdin, from_gateway, exited.clone()));
        tokio::spawn(log_stderr(stderr, upstream.to_owned(), pid));
        tokio::spawn(async move {
            let status = child.wait().await;
            // Whatever the leader left behind in its group goes with it.
            signal_group(pid, libc::SIGKILL);
            lock_groups().remove(&pid);
            let _ = exit_tx.send(Some(status.unwrap_or_else(|_| failed_status())));
        });
        let child = Arc::new(Self {
            pid,
            stdin: to_stdin,
            exited,
        });
        Ok((child, Lines::new(stdout)))
    }

    /// Writes one message (a line without its newline) to the child's
    /// stdin; `false` when the child no longer reads.
    pub async fn send(&self, line: Bytes) -> bool {
        self.stdin.send(line).await.is_ok()
    }

    /// Writes one message if the stdin queue has room; `false` if not.
    pub fn try_send(&self, line: Bytes) -> bool {
        self.stdin.try_send(line).is_ok()
    }

    /// Whether the child has exited.
    pub fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Waits for the child's exit and returns its status.
    pub async fn exit_status(&self) -> ExitStatus {
        let mut exited = self.exited.clone();
        let status = match exited.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or_else(failed_status),
            Err(_) => failed_status(),
        };
        status
    }

    /// Stops the child: SIGTERM to its group, SIGKILL after [`STOP_GRACE`].
    pub async fn stop(&self) {
        if self.has_exited() {
            return;
        }
        signal_group(self.pid, libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, self.exit_status())
            .await
            .is_err()
        {
            tracing::warn!(
                pid = self.pid,
                "stdio upstream process ignored SIGTERM; killing it"
            );
            signal_group(self.pid, libc::SIGKILL);
            self.exit_status().await;
        }
    }
}

fn failed_status() -> ExitStatus {
    std::os::unix::process::ExitStatusExt::from_raw(1 << 8)
}

fn lock_groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg has no memory effects; a group that is gone is ESRCH.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

/// Sends SIGTERM to every stdio process group still running, without
/// waiting: the start of a stop that [`stop_all_now`] completes, for a
/// gateway about to stop at once.
pub fn terminate_all() {
    for &g in lock_groups().iter() {
        signal_group(g, libc::SIGTERM);
    }
}

/// Ends every stdio process group still running, for a gateway about to
/// exit: SIGTERM, up to [`STOP_GRACE`] for them to go, then SIGKILL.
/// Blocking, and independent of the runtime (which may be gone): it reaps
/// the leaders itself, and a group is gone when no member is left.
pub fn stop_all_now() {
    let groups: Vec<i32> = lock_groups().iter().copied().collect();
    if groups.is_empty() {
        return;
    }
    tracing::info!(
        processes = groups.len(),
        "stopping stdio upstream processes"
    );
    for &g in &groups {
        signal_group(g, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut left = groups;
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left.retain(|&g| !group_gone(g));
    }
    for &g in &left {
        signal_group(g, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        left.retain(|&g| !group_gone(g));
    }
}

/// Whether no process of the group `pgid` is left, after reaping its
/// leader if it has exited (ours to reap: `pgid` is its pid).
fn group_gone(pgid: i32) -> bool {
    // SAFETY: waitpid and kill with signal 0 only query the kernel; a pid
    // already reaped (by the runtime) is ECHILD, a group gone is ESRCH.
    unsafe {
        libc::waitpid(pgid, std::ptr::null_mut(), libc::WNOHANG);
        libc::killpg(pgid, 0) == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// Feeds the child's stdin one line per message. Ends (closing stdin) when
/// every sender is gone, the child stops reading, or it exits.
async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::Receiver<Bytes>,
    mut exited: watch::Receiver<Option<ExitStatus>>,
) {
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            _ = exited.wait_for(Option::is_some) => None,
        };
        let Some(line) = line else {
            return;
        };
        let written = async {
            stdin.write_all(&line).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        if written.await.is_err() {
            return;
        }
    }
}

/// How many lines (of stderr, or stdout lines that are not JSON-RPC) may
/// be logged now: [`LOG_LINES_PER_SECOND`] in each one-second window;
/// the others are counted.
pub struct LineBudget {
    window: Instant,
    logged: u32,
    dropped: u64,
}

impl LineBudget {
    pub fn new(now: Instant) -> Self {
        Self {
            window: now,
            logged: 0,
            dropped: 0,
        }
    }

    /// `Some(lines left out since the last one logged)` if a line seen at
    /// `now` may be logged, `None` if it is left out.
    pub fn take(&mut self, now: Instant) -> Option<u64> {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            self.window = now;
            self.logged = 0;
        }
        if self.logged >= LOG_LINES_PER_SECOND {
            self.dropped += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.dropped))
    }
}

/// Logs the child's stderr, line by line, within a [`LineBudget`]; the
/// lines left out are counted in the next one logged.
async fn log_stderr(stderr: tokio::process::ChildStderr, upstream: String, pid: i32) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut budget = LineBudget::new(Instant::now());
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let Some(suppressed) = budget.take(Instant::now()) else {
            continue;
        };
        let end = line.len().min(MAX_STDERR_LINE);
        let text = String::from_utf8_lossy(&line[..end]);
        let text = text.trim_end();
        tracing::info!(target: "upstream_stderr", %upstream, pid, suppressed, line = %text.escape_debug(), "stdio upstream stderr");
    }
    if budget.dropped > 0 {
        tracing::info!(target: "upstream_stderr", %upstream, pid, suppressed = budget.dropped, "stdio upstream stderr lines left out");
    }
}

/// A child's stdout, read one line (one message) at a time.
pub struct Lines {
    reader: BufReader<ChildStdout>,
    /// The line read so far: kept here, so that [`Lines::next`] can be
    /// cancelled (raced against the child's exit) without losing it.
    line: Vec<u8>,
}

/// What reading a line found.
pub enum Line {
    /// One line, without its line end.
    Message(Vec<u8>),
    /// The stream ended.
    End,
    /// A line longer than [`MAX_LINE_BYTES`]: the child broke the protocol.
    TooLong,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        Self {
            reader: BufReader::with_capacity(64 * 1024, stdout),
            line: Vec::new(),
        }
    }

    /// The next non-empty line. Cancel-safe: a line half read when the
    /// future is dropped is finished by the next call.
    pub async fn next(&mut self) -> Line {
        let line = &mut self.line;
        loop {
            let (done, used) = match self.reader.fill_buf().await {
                Err(_) => return Line::End,
                Ok([]) if line.is_empty() => return Line::End,
                Ok([]) => (true, 0),
                Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                    Some(at) => {
                        line.extend_from_slice(&buf[..at]);
                        (true, at + 1)
                    }
                    None => {
                        line.extend_from_slice(buf);
                        (false, buf.len())
                    }
                },
            };
            self.reader.consume(used);
            if line.len() > MAX_LINE_BYTES {
                return Line::TooLong;
            }
            if done {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    line.clear();
                    continue;
                }
                return Line::Message(std::mem::take(line));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_logged_at_a_bounded_rate_and_the_rest_counted() {
        let start = Instant::now();
        let mut budget = LineBudget::new(start);
        let logged = (0..100).filter(|_| budget.take(start).is_some()).count();
        assert_eq!(logged, LOG_LINES_PER_SECOND as usize);
        let later = start + Duration::from_millis(1001);
        assert_eq!(
            budget.take(later),
            Some(80),
            "the next line tells how many were left out"
        );
        assert_eq!(budget.take(later), Some(0));
    }
}
