//! MCP/JSON-RPC message inspection: what a POST body asks for.
//!
//! The gateway reads each POST body once, here, to learn the JSON-RPC method,
//! request id and tool name of every message (batches included), and to check
//! the 2026-07-28 `Mcp-Method`/`Mcp-Name` headers against it. It never
//! re-serialises: the proxy forwards the original bytes, so what the upstream
//! parses is exactly what was inspected. Nothing here touches HTTP or tokens.
//!
//! `read` takes the body apart in one strict pass (`strict_json`'s rules),
//! keeping only the fields decided on; `read_message` then applies the
//! JSON-RPC rules to them.

mod read;
pub mod strict_json;
pub mod tools_list;

use read::{Body, Item, Params, Scalar};
use serde_json::Value;
use strict_json::{parse_with, StrictJsonError};

/// The methods MCP clients send to servers (2025-06-18 to 2026-07-28):
/// policy rules for other methods never apply, and metrics label any other
/// method `other`.
pub const CLIENT_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/update",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Which methods carry a name in `Mcp-Name`, and the `params` field it must
/// equal: SEP-2243 (2026-07-28) for tools, prompts and resources, and the
/// tasks extension (SEP-2663), whose requests name their task. Any other
/// method may not send `Mcp-Name`.
pub const NAMED_BY: &[(&str, &str)] = &[
    ("tools/call", "name"),
    ("prompts/get", "name"),
    ("resources/read", "uri"),
    ("tasks/get", "taskId"),
    ("tasks/update", "taskId"),
    ("tasks/cancel", "taskId"),
];

/// JSON-RPC 2.0 / MCP error codes the gateway answers with.
pub mod codes {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON that is not a valid JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Parameters the gateway needs are missing or mistyped.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal gateway error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// MCP 2026-07-28: `Mcp-Method`/`Mcp-Name` headers disagree with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// Gateway: the upstream could not be reached or failed mid-response.
    pub const UPSTREAM_UNAVAILABLE: i64 = -32001;
    /// Gateway: the upstream did not answer in time.
    pub const UPSTREAM_TIMEOUT: i64 = -32002;
    /// Gateway: the request was refused before reaching the upstream
    /// (origin, size, encoding, method).
    pub const REQUEST_REFUSED: i64 = -32003;
    /// Gateway: a rate limit refused the request (HTTP 429, `Retry-After`).
    pub const RATE_LIMITED: i64 = -32004;
}

/// Longest tool or prompt name (and resource URI) the gateway matches
/// against its policy; MCP asks for tool names of at most 128 characters.
pub const MAX_NAME_CHARS: usize = 2048;

/// Why a POST body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpError {
    /// Not parseable as JSON.
    #[error("parse error: {0}")]
    Parse(String),
    /// JSON, but not JSON-RPC 2.0 as MCP uses it.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A field the gateway must read has the wrong shape.
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// `Mcp-Method` / `Mcp-Name` do not match the body.
    #[error("header mismatch: {0}")]
    HeaderMismatch(String),
}

impl McpError {
    /// The JSON-RPC error code for this refusal.
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse(_) => codes::PARSE_ERROR,
            Self::InvalidRequest(_) => codes::INVALID_REQUEST,
            Self::InvalidParams(_) => codes::INVALID_PARAMS,
            Self::HeaderMismatch(_) => codes::HEADER_MISMATCH,
        }
    }
}

/// A refused POST body, with the `id` to answer with when the body was a
/// single message whose id could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPost {
    /// Why it was refused.
    pub error: McpError,
    /// The request id, or `null`.
    pub id: Value,
}

/// What one JSON-RPC message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageKind {
    /// A request expecting a response.
    Request,
    /// A notification (no `id`).
    Notification,
    /// A response to a server-initiated request (sampling, elicitation, ...).
    Response,
}

/// The parts of one JSON-RPC message the gateway decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMessage {
    /// Request or notification or response.
    pub kind: MessageKind,
    /// `id` (a string or an integer), absent for notifications.
    pub id: Option<Value>,
    /// `method`, absent for responses.
    pub method: Option<String>,
    /// `params.name` of a `tools/call`.
    pub tool: Option<String>,
    /// The value `Mcp-Name` must carry for this method (its field in
    /// [`NAMED_BY`]).
    pub subject: Option<String>,
}

/// A parsed POST body: one message or a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpPost {
    /// The messages, in body order.
    pub messages: Vec<RpcMessage>,
    /// Whether the body was a JSON array (a 2025-03-26 batch).
    pub is_batch: bool,
}

impl McpPost {
    /// Reads a POST body, refusing anything the upstream could read
    /// differently (see [`strict_json`]).
    pub fn parse(body: &[u8]) -> Result<Self, InvalidPost> {
        let refuse = |error: McpError, id: Option<Value>| InvalidPost {
            error,
            id: id.unwrap_or(Value::Null),
        };
        let doc = parse_with(body, read::BodySeed).map_err(|e| match e {
            StrictJsonError::Syntax(m) => refuse(McpError::Parse(m), None),
            StrictJsonError::DuplicateKey(k) => refuse(
                McpError::InvalidRequest(format!(
                    "duplicate object key {k}: ambiguous JSON is refused"
                )),
                None,
            ),
        })?;
        match doc {
            Body::Batch(items) if items.is_empty() => {
                Err(refuse(McpError::InvalidRequest("empty batch".into()), None))
            }
            Body::Batch(items) => Ok(Self {
                messages: items
                    .iter()
                    .map(read_message)
                    .collect::<Result<_, _>>()
                    .map_err(|e| refuse(e, None))?,
                is_batch: true,
            }),
            Body::Single(item) => {
                // The id is copied out only for a refusal to carry.
                let id = || match &item {
                    Item::Object(m) => m.id.as_ref().and_then(Scalar::as_id),
                    Item::NotObject => None,
                };
                Ok(Self {
                    messages: vec![read_message(&item).map_err(|e| refuse(e, id()))?],
                    is_batch: false,
                })
            }
        }
    }

    /// The `id` an error response for this body should carry: the request's
    /// id for a single request, `null` otherwise.
    pub fn response_id(&self) -> Value {
        match self.messages.as_slice() {
            [only] if !self.is_batch => only.id.clone().unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// The method of a single message (for logs), `batch` for a batch.
    pub fn method_label(&self) -> &str {
        match self.messages.as_slice() {
            [only] if !self.is_batch => only.method.as_deref().unwrap_or("response"),
            _ => "batch",
        }
    }

    /// MCP 2026-07-28: when `Mcp-Method` or `Mcp-Name` is sent it must agree
    /// with the body, or the request is refused with `-32020`.
    pub fn check_standard_headers(
        &self,
        mcp_method: Option<&str>,
        mcp_name: Option<&str>,
    ) -> Result<(), McpError> {
        if mcp_method.is_none() && mcp_name.is_none() {
            return Ok(());
        }
        let (false, [message]) = (self.is_batch, self.messages.as_slice()) else {
            return Err(McpError::HeaderMismatch(
                "Mcp-Method/Mcp-Name cannot describe a batch".into(),
            ));
        };
        if let Some(header) = mcp_method {
            if message.method.as_deref() != Some(header) {
                return Err(McpError::HeaderMismatch(format!(
                    "Mcp-Method `{header}` does not match the body's method"
                )));
            }
        }
        if let Some(header) = mcp_name {
            if message.subject.as_deref() != Some(header) {
                return Err(McpError::HeaderMismatch(format!(
                    "Mcp-Name `{header}` does not match the body"
                )));
            }
        }
        Ok(())
    }
}

/// Refuses a method name an upstream could read as another one: with
/// whitespace or control characters (an upstream that trims would run
/// `tools/call ` as `tools/call`), or equal to an MCP method after trimming
/// and case-folding without being it (`Tools/Call`). The gateway checks
/// exact names; such a name would pass its policy as an unknown method.
fn checked_method_name(name: &str) -> Result<&str, McpError> {
    if CLIENT_METHODS.contains(&name) {
        return Ok(name);
    }
    let shown = || name.escape_default().to_string();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(McpError::InvalidRequest(format!(
            "method `{}` is empty or has whitespace or control characters",
            shown()
        )));
    }
    let folded = name.trim().to_lowercase();
    if let Some(known) = CLIENT_METHODS.iter().find(|m| **m != name && **m == folded) {
        return Err(McpError::InvalidRequest(format!(
            "method `{}` is not `{known}`: method names are case-sensitive",
            shown()
        )));
    }
    Ok(name)
}

fn read_message(item: &Item<'_>) -> Result<RpcMessage, McpError> {
    let invalid = |m: &str| McpError::InvalidRequest(m.to_owned());
    let Item::Object(message) = item else {
        return Err(invalid("a JSON-RPC message must be an object"));
    };
    if message.jsonrpc.as_ref().and_then(Scalar::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    let id = match &message.id {
        None => None,
        Some(id) => Some(
            id.as_id()
                .ok_or_else(|| invalid("`id` must be a string or an integer"))?,
        ),
    };
    let method = match &message.method {
        None => None,
        Some(Scalar::Str(m)) => Some(checked_method_name(m)?.to_owned()),
        Some(_) => return Err(invalid("`method` must be a string")),
    };
    if message.params == Params::Other {
        return Err(invalid("`params` must be an object"));
    }
    let (has_result, has_error) = (message.has_result, message.has_error);
    let kind = match (&method, &id, has_result || has_error) {
        (Some(_), Some(_), false) => MessageKind::Request,
        (Some(_), None, false) => MessageKind::Notification,
        (None, Some(_), true) if has_result != has_error => MessageKind::Response,
        _ => return Err(invalid("not a JSON-RPC request, notification or response")),
    };
    let subject = named_subject(method.as_deref(), &message.params)?;
    let tool = subject
        .clone()
        .filter(|_| method.as_deref() == Some("tools/call"));
    Ok(RpcMessage {
        kind,
        id,
        method,
        tool,
        subject,
    })
}

/// What a method names, for the methods that name something (the tool of
/// `tools/call`, the resource of `resources/read`, ...): `params.<field>`
/// as a string of at most `MAX_NAME_CHARS` characters.
fn named_subject(method: Option<&str>, params: &Params<'_>) -> Result<Option<String>, McpError> {
    let Some((method, field)) = NAMED_BY.iter().find(|(m, _)| Some(*m) == method) else {
        return Ok(None);
    };
    params
        .named(field)
        .filter(|v| v.chars().count() <= MAX_NAME_CHARS)
        .map(|v| Some(v.to_owned()))
        .ok_or_else(|| {
            McpError::InvalidParams(format!(
                "`{method}` needs `params.{field}` as a string of at most {MAX_NAME_CHARS} characters"
            ))
        })
}

#[cfg(test)]
mod tests;
