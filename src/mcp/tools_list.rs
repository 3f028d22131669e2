//! Removing the tools a caller may not call from `tools/list` results.
//!
//! The proxy knows which request ids of a POST were `tools/list` calls; the
//! responses with those ids get their `result.tools` filtered by a predicate
//! the caller supplies (this module knows nothing of tokens). On a GET
//! stream, which can replay earlier responses (`Last-Event-ID`), every
//! response carrying `result.tools` is filtered. JSON bodies
//! are rewritten whole; SSE streams event by event, each event passed on as
//! soon as it is complete, and events that are not such a response pass
//! through byte for byte.

use super::McpPost;
use serde_json::Value;
use std::sync::Arc;

/// Whether the caller may see (call) the tool of this name.
pub type KeepTool = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Largest JSON body, or single SSE event, the filter holds in memory.
pub const MAX_FILTERED_BYTES: usize = 16 * 1024 * 1024;

/// Which responses to filter, and which tools to keep.
pub struct ToolsListFilter {
    /// Ids of the `tools/list` requests; `None`: every response.
    ids: Option<Vec<Value>>,
    keep: KeepTool,
}

impl ToolsListFilter {
    /// A filter for the `tools/list` requests of `post`; `None` when it has
    /// none (the response then streams through untouched).
    pub fn new(post: &McpPost, keep: KeepTool) -> Option<Self> {
        let ids: Vec<Value> = post
            .messages
            .iter()
            .filter(|m| m.method.as_deref() == Some("tools/list"))
            .filter_map(|m| m.id.clone())
            .collect();
        (!ids.is_empty()).then_some(Self {
            ids: Some(ids),
            keep,
        })
    }

    /// A filter for any response with a `result.tools` list (GET streams).
    pub fn any_response(keep: KeepTool) -> Self {
        Self { ids: None, keep }
    }

    /// Filters one JSON-RPC message (or a batch of them) in place; returns
    /// whether anything was removed.
    fn filter_value(&self, value: &mut Value) -> bool {
        if let Value::Array(items) = value {
            return items
                .iter_mut()
                .fold(false, |changed, v| self.filter_value(v) | changed);
        }
        let ours = match (&self.ids, value.get("id")) {
            (Some(ids), Some(id)) => ids.contains(id),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let Some(tools) = value
            .pointer_mut("/result/tools")
            .and_then(Value::as_array_mut)
            .filter(|_| ours)
        else {
            return false;
        };
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|name| (self.keep)(name))
        });
        tools.len() != before
    }

    /// Rewrites a whole JSON body; `None` when nothing had to change.
    pub fn filter_json(&self, body: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let mut value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("the upstream's JSON response is invalid: {e}"))?;
        if !self.filter_value(&mut value) {
            return Ok(None);
        }
        serde_json::to_vec(&value)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// A filter for an SSE body.
    pub fn into_sse(self) -> SseToolsFilter {
        SseToolsFilter {
            filter: self,
            pending: Vec::new(),
            scanned: 0,
        }
    }
}

/// Filters an SSE stream chunk by chunk.
pub struct SseToolsFilter {
    filter: ToolsListFilter,
    pending: Vec<u8>,
    /// How much of `pending` is known to hold no event end.
    scanned: usize,
}

/// End of the first event in `buf` at or after `from`: the index just past
/// its blank line (`\n\n`, `\n\r\n` or, with CR-only line ends, `\r\r`).
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| match (buf[i], buf.get(i + 1), buf.get(i + 2)) {
        (b'\n', Some(b'\n'), _) => Some(i + 2),
        (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
        (b'\r', Some(b'\r'), _) => Some(i + 2),
        _ => None,
    })
}

impl SseToolsFilter {
    /// Takes the next chunk of the stream; returns the bytes ready to send
    /// (every event completed so far, filtered).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<u8>, String> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        // An event end may straddle the previous chunk's last two bytes.
        let mut from = self.scanned.saturating_sub(2);
        while let Some(end) = event_end(&self.pending, from) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            out.extend(self.rewrite_event(&event));
            from = 0;
        }
        self.scanned = self.pending.len();
        if self.pending.len() > MAX_FILTERED_BYTES {
            return Err(format!("an SSE event exceeds {MAX_FILTERED_BYTES} bytes"));
        }
        Ok(out)
    }

    /// The end of the stream. An event cut off before its blank line is
    /// dropped, as SSE clients drop it (it was never checked).
    pub fn finish(self) {
        if !self.pending.iter().all(u8::is_ascii_whitespace) {
            tracing::warn!(
                bytes = self.pending.len(),
                "dropped an SSE event the upstream left unfinished"
            );
        }
    }

    fn rewrite_event(&self, event: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(event) else {
            return event.to_vec();
        };
        let lines: Vec<&str> = text.lines().collect();
        let data: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let Ok(mut value) = serde_json::from_str::<Value>(&data.join("\n")) else {
            return event.to_vec();
        };
        if !self.filter.filter_value(&mut value) {
            return event.to_vec();
        }
        let mut out = String::new();
        let mut data_written = false;
        for line in lines.iter().filter(|l| !l.is_empty()) {
            if line.starts_with("data:") {
                if !data_written {
                    out.push_str(&format!("data: {value}\n"));
                    data_written = true;
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn post(body: Value) -> McpPost {
        McpPost::parse(body.to_string().as_bytes()).unwrap()
    }

    fn keep_add() -> KeepTool {
        Arc::new(|name: &str| name == "add")
    }

    fn list_response(id: Value) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "add"}, {"name": "admin"}]}})
    }

    #[test]
    fn json_response_loses_the_tools_the_caller_cannot_call() {
        let p = post(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}));
        let f = ToolsListFilter::new(&p, keep_add()).unwrap();
        let out = f
            .filter_json(list_response(json!(7)).to_string().as_bytes())
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([{"name": "add"}]));
        // Another id is not ours to touch.
        assert!(f
            .filter_json(list_response(json!(8)).to_string().as_bytes())
            .unwrap()
            .is_none());
    }

    #[test]
    fn posts_without_tools_list_need_no_filter() {
        let p = post(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add"}}),
        );
        assert!(ToolsListFilter::new(&p, keep_add()).is_none());
    }

    #[test]
    fn sse_events_are_filtered_across_chunk_boundaries_and_others_pass_unchanged() {
        let p = post(json!([{"jsonrpc": "2.0", "id": "a", "method": "tools/list"}]));
        let f = ToolsListFilter::new(&p, keep_add()).unwrap();
        let mut sse = f.into_sse();
        let progress =
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let list = format!("id: 3\ndata: {}\n\n", list_response(json!("a")));
        let stream = format!("{progress}{list}");
        let (a, b) = stream.as_bytes().split_at(progress.len() + 10);
        let mut out = sse.push(a).unwrap();
        assert_eq!(out, progress.as_bytes());
        out.extend(sse.push(b).unwrap());
        sse.finish();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("id: 3\ndata: {"));
        assert!(
            text.contains("\"add\"") && !text.contains("\"admin\""),
            "{text}"
        );
        assert!(text.ends_with("}\n\n"));
    }

    #[test]
    fn an_unfinished_last_event_is_dropped_and_cr_only_events_are_filtered() {
        let p = post(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        let f = ToolsListFilter::new(&p, keep_add()).unwrap();
        let mut sse = f.into_sse();
        let cr_only = format!("data: {}\r\r", list_response(json!(1)));
        let out = String::from_utf8(sse.push(cr_only.as_bytes()).unwrap()).unwrap();
        assert!(
            out.contains("\"add\"") && !out.contains("\"admin\""),
            "{out}"
        );
        let unfinished = format!("data: {}", list_response(json!(1)));
        assert!(sse.push(unfinished.as_bytes()).unwrap().is_empty());
        sse.finish();
    }
}
