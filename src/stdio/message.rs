//! A JSON-RPC message on its way between a client and a stdio process.
//!
//! The bridge rewrites ids (and the request id a cancellation names) so
//! that one process can serve several clients; every other member is kept
//! as the exact JSON text it arrived as, so nothing else changes on the
//! way, numbers of any size included.

use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// A JSON-RPC message: its members, each as raw JSON text.
#[derive(Debug)]
pub struct Message {
    members: BTreeMap<String, Box<RawValue>>,
}

/// The three kinds of JSON-RPC message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a `method` and an `id`: expects an answer.
    Request,
    /// Has a `method` and no `id`.
    Notification,
    /// Has an `id` and no `method`: answers a request.
    Response,
}

/// Why text is not a message.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON, or not an object (or a batch of them).
    #[error("not a JSON-RPC message: {0}")]
    Syntax(#[from] serde_json::Error),
    /// Neither a `method` nor an `id`.
    #[error("a JSON-RPC message needs a `method` or an `id`")]
    Shapeless,
}

impl Message {
    /// Reads one message.
    pub fn parse(text: &[u8]) -> Result<Self, MessageError> {
        let members: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(text)?;
        let message = Self { members };
        if !message.members.contains_key("method") && !message.members.contains_key("id") {
            return Err(MessageError::Shapeless);
        }
        Ok(message)
    }

    /// Reads a POST body: one message or a batch of them. The body has
    /// passed the proxy's strict checks already (see `crate::mcp`).
    pub fn parse_body(body: &[u8]) -> Result<Vec<Self>, MessageError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'[') {
            let items: Vec<Box<RawValue>> = serde_json::from_slice(body)?;
            items
                .iter()
                .map(|raw| Self::parse(raw.get().as_bytes()))
                .collect()
        } else {
            Self::parse(body).map(|m| vec![m])
        }
    }

    /// A response carrying `result`, or a JSON-RPC error.
    pub fn response(id: Box<RawValue>, outcome: Result<Box<RawValue>, (i64, &str)>) -> Self {
        let mut members = BTreeMap::new();
        members.insert("jsonrpc".to_owned(), raw("\"2.0\""));
        members.insert("id".to_owned(), id);
        match outcome {
            Ok(result) => members.insert("result".to_owned(), result),
            Err((code, message)) => members.insert(
                "error".to_owned(),
                raw(&serde_json::json!({"code": code, "message": message}).to_string()),
            ),
        };
        Self { members }
    }

    /// A notification with `params`.
    pub fn notification(method: &str, params: serde_json::Value) -> Self {
        let mut members = BTreeMap::new();
        members.insert("jsonrpc".to_owned(), raw("\"2.0\""));
        members.insert(
            "method".to_owned(),
            raw(&serde_json::Value::from(method).to_string()),
        );
        members.insert("params".to_owned(), raw(&params.to_string()));
        Self { members }
    }

    /// Which kind of message this is.
    pub fn kind(&self) -> Kind {
        match (
            self.members.contains_key("method"),
            self.members.contains_key("id"),
        ) {
            (true, true) => Kind::Request,
            (true, false) => Kind::Notification,
            _ => Kind::Response,
        }
    }

    /// The method, decoded; `None` for responses (or a method that is not
    /// a string).
    pub fn method(&self) -> Option<String> {
        self.members
            .get("method")
            .and_then(|m| serde_json::from_str(m.get()).ok())
    }

    /// The id as raw JSON text.
    pub fn id(&self) -> Option<&RawValue> {
        self.members.get("id").map(AsRef::as_ref)
    }

    /// Takes the id out, leaving the message without one.
    pub fn take_id(&mut self) -> Option<Box<RawValue>> {
        self.members.remove("id")
    }

    /// Replaces the id.
    pub fn set_id(&mut self, id: Box<RawValue>) {
        self.members.insert("id".to_owned(), id);
    }

    /// The `result` of a response.
    pub fn result(&self) -> Option<&RawValue> {
        self.members.get("result").map(AsRef::as_ref)
    }

    /// A member of `params` (of `params._meta` for `_meta.<name>`), as raw
    /// JSON text.
    pub fn param(&self, name: &str) -> Option<Box<RawValue>> {
        let params = self.params()?;
        match name.strip_prefix("_meta.") {
            Some(inner) => {
                let meta: BTreeMap<String, Box<RawValue>> =
                    serde_json::from_str(params.get("_meta")?.get()).ok()?;
                meta.get(inner).cloned()
            }
            None => params.get(name).cloned(),
        }
    }

    /// Replaces a member of `params` (of `params._meta` for `_meta.<name>`);
    /// nothing changes when `params` is not an object.
    pub fn set_param(&mut self, name: &str, value: Box<RawValue>) {
        let Some(mut params) = self.params() else {
            return;
        };
        match name.strip_prefix("_meta.") {
            Some(inner) => {
                let mut meta: BTreeMap<String, Box<RawValue>> = params
                    .get("_meta")
                    .and_then(|m| serde_json::from_str(m.get()).ok())
                    .unwrap_or_default();
                meta.insert(inner.to_owned(), value);
                if let Ok(text) = serde_json::to_string(&meta) {
                    params.insert("_meta".to_owned(), raw(&text));
                }
            }
            None => {
                params.insert(name.to_owned(), value);
            }
        }
        if let Ok(text) = serde_json::to_string(&params) {
            self.members.insert("params".to_owned(), raw(&text));
        }
    }

    fn params(&self) -> Option<BTreeMap<String, Box<RawValue>>> {
        serde_json::from_str(self.members.get("params")?.get()).ok()
    }

    /// The message as one line of JSON, without a line end: a client's
    /// members keep their text, but not the line breaks between tokens,
    /// which would end the line on a process's stdin.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(compact(
            &serde_json::to_vec(&self.members).unwrap_or_default(),
        ))
    }
}

/// Valid JSON text without the whitespace between its tokens (strings,
/// where a line break is always escaped, are kept as they are).
fn compact(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in json {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    out
}

/// A gateway-made id (or any other number) as raw JSON.
pub fn number(n: u64) -> Box<RawValue> {
    raw(&n.to_string())
}

/// A number read back from a gateway-made id.
pub fn as_number(id: &RawValue) -> Option<u64> {
    id.get().parse().ok()
}

/// Text the caller knows is valid JSON, as a raw value.
fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_owned()).unwrap_or_else(|_| null())
}

/// JSON `null`.
pub fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_owned()).expect("null is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_id_changes_and_big_numbers_keep_their_text() {
        let mut m = Message::parse(
            br#"{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"x","arguments":{"n":123456789012345678901234567890}}}"#,
        )
        .unwrap();
        assert_eq!(m.kind(), Kind::Request);
        assert_eq!(m.take_id().unwrap().get(), r#""a""#);
        m.set_id(number(7));
        let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(text.contains(r#""id":7"#), "{text}");
        assert!(text.contains("123456789012345678901234567890"), "{text}");
    }

    #[test]
    fn line_breaks_between_tokens_never_reach_the_line() {
        let m = Message::parse(
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\n  \"a\": [1,\r\n 2],\n  \"s\": \"x \\\" y\\n\"\n}}",
        )
        .unwrap();
        let text = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(
            text.contains(r#""params":{"a":[1,2],"s":"x \" y\n"}"#),
            "{text}"
        );
    }

    #[test]
    fn kinds_and_batches() {
        let batch = Message::parse_body(
            br#" [{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":1,"result":{}}]"#,
        )
        .unwrap();
        assert_eq!(batch[0].kind(), Kind::Notification);
        assert_eq!(batch[1].kind(), Kind::Response);
        assert!(matches!(
            Message::parse(br#"{"jsonrpc":"2.0"}"#),
            Err(MessageError::Shapeless)
        ));
    }

    #[test]
    fn progress_tokens_are_read_from_meta() {
        let m = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"_meta":{"progressToken":"p1"}}}"#,
        )
        .unwrap();
        assert_eq!(m.param("_meta.progressToken").unwrap().get(), r#""p1""#);
        assert!(m.param("_meta.other").is_none());
    }

    #[test]
    fn a_progress_token_is_replaced_and_the_rest_of_meta_kept() {
        let mut m = Message::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"p1","other":true}}}"#,
        )
        .unwrap();
        m.set_param("_meta.progressToken", number(42));
        assert_eq!(m.param("_meta.progressToken").unwrap().get(), "42");
        assert_eq!(m.param("_meta.other").unwrap().get(), "true");
        assert_eq!(m.param("name").unwrap().get(), r#""x""#);
    }
}
