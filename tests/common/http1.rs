//! A raw HTTP/1.1 keep-alive connection for tests that must see exactly what
//! crosses the wire: every request on one socket, pipelining (several
//! requests in one write), and whether the server closed the connection.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response as read off the connection.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection, kept alive across requests.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

/// How long one response may take before the test calls it lost.
const READ_DEADLINE: Duration = Duration::from_secs(20);

impl Conn {
    pub async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// Writes raw bytes (one request, several, or a part of one).
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    /// Reads one response; `Err` says how the connection failed instead.
    pub async fn read_response(&mut self) -> Result<RawResponse, String> {
        tokio::time::timeout(READ_DEADLINE, self.read_response_inner())
            .await
            .map_err(|_| "no response within the deadline".to_owned())?
    }

    async fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by the server".to_owned());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    async fn read_response_inner(&mut self) -> Result<RawResponse, String> {
        let status_line = self.read_line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line `{status_line}`"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line `{line}`"))?;
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        if response.header("transfer-encoding") == Some("chunked") {
            loop {
                let size_line = self.read_line().await?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size `{size_line}`"))?;
                let mut chunk = vec![0; size + 2];
                self.stream
                    .read_exact(&mut chunk)
                    .await
                    .map_err(|e| format!("chunk: {e}"))?;
                if size == 0 {
                    break;
                }
                response.body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().map_err(|_| "bad content-length".to_owned())?;
            let mut body = vec![0; len];
            self.stream
                .read_exact(&mut body)
                .await
                .map_err(|e| format!("body: {e}"))?;
            response.body = body;
        }
        Ok(response)
    }

    /// Reads a streamed response until `needle` has arrived; returns the
    /// text read so far (head and body, raw).
    pub async fn read_until(&mut self, needle: &str) -> Result<String, String> {
        let mut seen = Vec::new();
        let mut buf = vec![0; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = tokio::time::timeout(READ_DEADLINE, self.stream.read(&mut buf))
                .await
                .map_err(|_| format!("`{needle}` not within the deadline"))?
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("connection closed before `{needle}`"));
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(String::from_utf8_lossy(&seen).into_owned())
    }

    /// Whether the server has closed the connection (waits up to `wait`).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A JSON-RPC POST with a `Content-Length` body, as raw bytes.
pub fn post(path: &str, body: &str, extra_headers: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
