use super::*;
use serde_json::json;

fn parse(body: &str) -> Result<McpPost, McpError> {
    McpPost::parse(body.as_bytes()).map_err(|e| e.error)
}

#[test]
fn tools_call_yields_method_id_and_tool_name() {
    let post = parse(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#,
    )
    .unwrap();
    let m = &post.messages[0];
    assert_eq!(
        (m.kind.clone(), m.method.as_deref(), m.tool.as_deref()),
        (MessageKind::Request, Some("tools/call"), Some("echo"))
    );
    assert_eq!(post.response_id(), json!(7));
    assert_eq!(post.method_label(), "tools/call");
}

#[test]
fn notifications_and_responses_are_recognised() {
    let n = parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
    assert_eq!(n.messages[0].kind, MessageKind::Notification);
    assert_eq!(n.response_id(), Value::Null);
    let r = parse(r#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#).unwrap();
    assert_eq!(r.messages[0].kind, MessageKind::Response);
}

#[test]
fn batches_are_read_element_by_element() {
    let post = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add"}}]"#).unwrap();
    assert!(post.is_batch);
    assert_eq!(post.messages[1].tool.as_deref(), Some("add"));
    assert_eq!(post.response_id(), Value::Null);
    assert_eq!(post.method_label(), "batch");
}

#[test]
fn one_bad_element_refuses_the_whole_batch() {
    let err = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"id":2}]"#).unwrap_err();
    assert_eq!(err.code(), codes::INVALID_REQUEST);
}

#[test]
fn invalid_json_is_a_parse_error() {
    assert_eq!(parse("{not json").unwrap_err().code(), -32700);
}

#[test]
fn json_that_is_not_json_rpc_is_an_invalid_request() {
    for body in [
        "[]",
        "42",
        r#"{"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0"}"#,
    ] {
        assert_eq!(parse(body).unwrap_err().code(), -32600, "{body}");
    }
}

#[test]
fn duplicate_keys_are_an_invalid_request() {
    let err = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","name":"danger"}}"#).unwrap_err();
    assert_eq!(err.code(), -32600);
    assert!(err.to_string().contains("duplicate"), "{err}");
}

#[test]
fn tools_call_without_a_string_name_is_invalid_params() {
    let err =
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#).unwrap_err();
    assert_eq!(err.code(), -32602);
}

#[test]
fn tool_names_are_kept_exactly_as_sent() {
    let post =
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"Écho\u0000"}}"#)
            .unwrap();
    assert_eq!(post.messages[0].tool.as_deref(), Some("Écho\u{0}"));
}

// spec: Resource server 9 [26], Mcp-Method/Mcp-Name must match the body.
#[test]
fn matching_standard_headers_pass() {
    let post =
        parse(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#)
            .unwrap();
    assert!(post
        .check_standard_headers(Some("resources/read"), Some("file:///a"))
        .is_ok());
    assert!(post.check_standard_headers(None, None).is_ok());
}

#[test]
fn mismatched_standard_headers_are_error_32020() {
    let post = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#)
        .unwrap();
    for (m, n) in [
        (Some("tools/list"), None),
        (None, Some("add")),
        (Some("tools/call"), Some("ECHO")),
    ] {
        assert_eq!(
            post.check_standard_headers(m, n).unwrap_err().code(),
            -32020
        );
    }
    let batch = parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
    assert_eq!(
        batch
            .check_standard_headers(Some("ping"), None)
            .unwrap_err()
            .code(),
        -32020
    );
}

#[test]
fn refusal_of_a_single_message_carries_its_id() {
    let err = McpPost::parse(br#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{}}"#)
        .unwrap_err();
    assert_eq!((err.error.code(), err.id), (-32602, json!("q")));
    let err = McpPost::parse(br#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#).unwrap_err();
    assert_eq!(err.id, Value::Null, "an invalid id is not echoed");
}

// Issue 11.6: the tasks extension (SEP-2663) names its task in `Mcp-Name`.
#[test]
fn tasks_requests_carry_their_task_id_in_mcp_name() {
    for method in ["tasks/get", "tasks/update", "tasks/cancel"] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"taskId":"t-9"}}}}"#
        );
        let post = parse(&body).unwrap();
        assert_eq!(
            post.check_standard_headers(Some(method), Some("t-9")),
            Ok(()),
            "{method}"
        );
        assert!(
            post.check_standard_headers(Some(method), Some("t-8"))
                .is_err(),
            "{method}: another task id"
        );
        assert_eq!(post.messages[0].tool, None, "{method} is not a tool call");
    }
    let list = parse(r#"{"jsonrpc":"2.0","id":1,"method":"tasks/list"}"#).unwrap();
    assert!(
        list.check_standard_headers(None, Some("t-9")).is_err(),
        "tasks/list names nothing"
    );
}

// Issue 11.6: method names an upstream could trim or case-fold into a known
// method are refused; other well-formed names pass (policy decides).
#[test]
fn method_names_that_could_be_read_as_another_are_refused() {
    for method in [
        "tools/call ",
        " tools/call",
        "Tools/Call",
        "TOOLS/CALL",
        "tools/call\\u0000",
        "tools/\\tcall",
        "tools/call\\n",
        "",
    ] {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"x"}}}}"#);
        assert!(
            matches!(parse(&body), Err(McpError::InvalidRequest(_))),
            "{method:?}"
        );
    }
    for method in ["tools/call", "vendor/Extension", "x-custom"] {
        let body =
            format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"name":"x"}}}}"#);
        assert!(parse(&body).is_ok(), "{method}");
    }
}

/// The parts of a body the gateway does not keep (arguments, `_meta`,
/// results) are held to the same strict rules as the parts it reads.
#[test]
fn what_is_not_kept_is_checked_all_the_same() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"a":2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","_meta":{"x":[{"k":1,"k\u0000":2,"k":3}]}}}"#,
        r#"[{"jsonrpc":"2.0","id":"s","result":{"content":[],"content":[]}}]"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","m\u0065thod":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","n\u0061me":"danger"}}"#,
    ] {
        let err = parse(body).unwrap_err();
        assert!(
            matches!(&err, McpError::InvalidRequest(m) if m.contains("duplicate object key")),
            "{body}: {err}"
        );
    }
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1e999}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":[1,]}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"x\":\"\\ud800\"}",
    ] {
        assert_eq!(parse(body).unwrap_err().code(), -32700, "{body}");
    }
}

/// Fields are read by their decoded names and values, as any JSON parser
/// reads them; an `id` is a string or an integer of either sign.
#[test]
fn escaped_names_and_ids_are_read_as_decoded() {
    let post = parse(
        r#"{"jsonrpc":"2\u002e0","\u0069d":-7,"method":"tools\/call","params":{"n\u0061me":"\u0061dd"}}"#,
    )
    .unwrap();
    let m = &post.messages[0];
    assert_eq!(
        (m.id.clone(), m.method.as_deref(), m.tool.as_deref()),
        (Some(serde_json::json!(-7)), Some("tools/call"), Some("add"))
    );
    let big = parse(r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#).unwrap();
    assert_eq!(
        big.response_id(),
        serde_json::json!(18446744073709551615u64)
    );
    for body in [
        r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":"x"}"#,
        r#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#,
    ] {
        assert_eq!(parse(body).unwrap_err().code(), -32600, "{body}");
    }
}
