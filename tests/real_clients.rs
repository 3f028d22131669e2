//! Real MCP clients, unmodified, through the real gateway to a real MCP
//! server: the official TypeScript SDK (1.x and 2.x), the Python SDK, the
//! Rust SDK `rmcp` and the MCP Inspector CLI, in front of
//! `@modelcontextprotocol/server-everything` with a per-tool policy. What
//! they need is installed by `tests/e2e/setup.sh` (run once, cached).
//! Each client script prints the HTTP exchanges that led to a failure.

mod common;

use common::e2e::*;
use common::{Gateway, Upstream};
use serde_json::{json, Value};
use std::path::PathBuf;

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// What tools/list shows a token holding only the base scope `mcp`: every
/// tool but those needing `math` or `admin`.
fn assert_base_scope_tools(tools: &Value) {
    let tools = strings(tools);
    for shown in ["echo", "trigger-long-running-operation", "get-tiny-image"] {
        assert!(tools.contains(&shown), "{shown} is listed: {tools:?}");
    }
    for hidden in ["get-sum", "get-env", "gzip-file-as-resource"] {
        assert!(
            !tools.contains(&hidden),
            "{hidden} is filtered out: {tools:?}"
        );
    }
}

/// After step-up to `mcp math`: `get-sum` appears, the `admin` tools do not.
fn assert_math_scope_tools(tools: &Value) {
    let tools = strings(tools);
    assert!(
        tools.contains(&"get-sum"),
        "get-sum listed after step-up: {tools:?}"
    );
    assert!(
        !tools.contains(&"get-env"),
        "get-env needs admin: {tools:?}"
    );
}

/// Revoking the refresh token answered 200, the next MCP request got a 401
/// at once (the family's access tokens were revoked with it), and the
/// client could not get back in without the user.
fn assert_revoked_at_once(revoke_status: &Value, next_status: &Value, outcome: &Value) {
    assert_eq!(revoke_status, 200);
    assert_eq!(next_status, 401, "the first request after revocation");
    assert!(
        outcome.as_str().unwrap().starts_with("refused"),
        "after revocation the client cannot get in: {outcome}"
    );
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Starts server-everything and the gateway (2 s access tokens) and runs
/// the client `script` with `program` through the whole flow as `alice`.
/// Returns what it saw, and the servers, which the test keeps until its
/// end so that a failed assertion prints the HTTP exchanges.
async fn full_flow(program: PathBuf, script: &str) -> (Value, (Everything, OAuthGateway)) {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::start(&everything, "  access_token_ttl: 2s\n").await;
    let seen = run_flow(program, script, &oauth).await;
    (seen, (everything, oauth))
}

/// The same flow with server-everything as a stdio upstream: the gateway
/// runs it, one process per MCP session (issue 15).
async fn full_flow_over_stdio(program: PathBuf, script: &str) -> (Value, OAuthGateway) {
    let oauth = OAuthGateway::stdio("  access_token_ttl: 2s\n").await;
    let seen = run_flow(program, script, &oauth).await;
    (seen, oauth)
}

async fn run_flow(program: PathBuf, script: &str, oauth: &OAuthGateway) -> Value {
    let url = oauth.mcp_url();
    let seen = run_client(program, args(&[script, &url, "alice", "pw"])).await;
    println!("{seen}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_lists_and_calls_demo_tools_through_the_gateway() {
    ensure_setup();
    let upstream = Upstream::start().await;
    let gw = Gateway::start(&upstream).await;
    let url = gw.url("/demo/mcp");
    let seen = run_client(node22(), args(&["ts_sdk_client.mjs", &url])).await;
    assert_eq!(
        seen["tools"],
        json!(["echo", "add", "get_time", "countdown"])
    );
    assert_eq!(seen["add"], "42");
    assert_eq!(seen["countdown"], "counted down 3 steps");
    assert_eq!(
        seen["progress"],
        json!([1, 2, 3]),
        "progress notifications reached the SDK"
    );
    assert!(
        upstream.seen().iter().any(|r| r == "DELETE /mcp"),
        "session DELETE passed through: {:?}",
        upstream.seen()
    );
}

/// The current TypeScript SDK (2.x) through the whole flow: 401 -> PRM ->
/// AS metadata -> DCR -> authorize -> login + consent -> token -> filtered
/// tools/list -> allowed call -> 403 insufficient_scope answered by the
/// SDK's own step-up (spec: resource server 5) -> expiry -> refresh ->
/// revoke -> refused; progress notifications arrive as they are sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_2_completes_oauth_and_steps_up_by_itself() {
    let (seen, _servers) = full_flow(node22(), "ts_sdk_v2_oauth.mjs").await;
    assert_typescript_sdk_2_flow(&seen);
}

/// The same, in front of server-everything run over stdio by the gateway:
/// filtered tools/list, step-up, progress as it happens, refresh, revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_2_completes_oauth_against_a_stdio_upstream() {
    let (seen, _oauth) = full_flow_over_stdio(node22(), "ts_sdk_v2_oauth.mjs").await;
    assert_typescript_sdk_2_flow(&seen);
}

fn assert_typescript_sdk_2_flow(seen: &Value) {
    assert!(
        seen["firstScope"].as_str().unwrap().starts_with("mcp"),
        "the SDK asked for the challenged base scope: {}",
        seen["firstScope"]
    );
    assert_base_scope_tools(&seen["tools"]);
    assert_eq!(seen["echo"], "Echo: hi");
    assert_eq!(seen["sum"], "The sum of 20 and 22 is 42.");
    assert_eq!(
        seen["insufficientScope403s"], 1,
        "get-sum was refused once with 403 insufficient_scope"
    );
    assert_eq!(
        seen["stepUpAuthorizations"], 1,
        "the SDK re-authorized once with the wider scope"
    );
    assert!(seen["scopeAfterStepUp"].as_str().unwrap().contains("math"));
    assert_math_scope_tools(&seen["toolsAfterStepUp"]);
    let progress = seen["progress"].as_array().unwrap();
    assert_eq!(
        progress.len(),
        3,
        "three progress notifications: {progress:?}"
    );
    // Incremental: the first notification arrived well before the result
    // (the tool sleeps 0.5 s between steps); a gateway that buffered the
    // stream would deliver all of them with the result.
    let first_at = progress[0]["atMs"].as_u64().unwrap();
    let result_at = seen["resultAtMs"].as_u64().unwrap();
    assert!(
        result_at >= first_at + 400,
        "progress arrived incrementally: first at {first_at} ms, result at {result_at} ms"
    );
    assert_eq!(seen["refreshed"], true, "refresh after expiry");
    assert_eq!(seen["afterExpiry"], "The sum of 1 and 1 is 2.");
    assert_revoked_at_once(
        &seen["revokeStatus"],
        &seen["firstStatusAfterRevoke"],
        &seen["afterRevoke"],
    );
}

/// The same flow through three replicas on one PostgreSQL behind a
/// round-robin balancer (issue 14): every request of the SDK, the browser
/// steps included, lands on the next replica. The revocation reaches the
/// other replicas by PostgreSQL's NOTIFY, within milliseconds but not in
/// lockstep with the SDK's next request, so its first request after the
/// revocation may still pass; tests/replicas.rs bounds that window at 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_2_completes_oauth_through_three_replicas() {
    let everything = Everything::start().await;
    let db = common::postgres::fresh_database();
    let oauth = OAuthGateway::replicated(&everything, &db, "  access_token_ttl: 2s\n").await;
    let seen = run_flow(node22(), "ts_sdk_v2_oauth.mjs", &oauth).await;
    let replicas: std::collections::BTreeSet<usize> = oauth
        .exchanges()
        .iter()
        .filter_map(|line| common::relay::replica_of(line))
        .collect();
    assert_eq!(replicas.len(), 3, "all three replicas served: {replicas:?}");
    let mut after_revoke = seen.clone();
    after_revoke["firstStatusAfterRevoke"] = json!(401);
    after_revoke["afterRevoke"] = json!("refused (propagation checked in tests/replicas.rs)");
    assert_eq!(seen["revokeStatus"], 200);
    assert_typescript_sdk_2_flow(&after_revoke);
}

/// TypeScript SDK 1.x (`@modelcontextprotocol/sdk`) through the same flow.
/// On 403 insufficient_scope it refreshes (which cannot widen the scope)
/// and gives up; the script's application code then re-authorizes with the
/// challenged scope (typescript-sdk issue 2255, fixed in 2.x).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typescript_sdk_1_completes_oauth_with_application_step_up() {
    let (seen, _servers) = full_flow(node22(), "ts_sdk_oauth.mjs").await;
    assert_eq!(seen["firstScope"], "mcp");
    assert_base_scope_tools(&seen["tools"]);
    assert_eq!(seen["echo"], "Echo: hi");
    assert_eq!(seen["sum"], "The sum of 20 and 22 is 42.");
    assert_eq!(seen["stepUp"], "application");
    assert_eq!(seen["scopeAfterStepUp"], "mcp math");
    assert_eq!(seen["progress"], json!([1, 2, 3]));
    assert_eq!(
        seen["insufficientScope403s"], 2,
        "the first try and the SDK's retry after its refresh"
    );
    assert_eq!(seen["refreshed"], true);
    assert_eq!(
        seen["expiryStepUp"], "none",
        "the refresh alone got the call through"
    );
    assert_eq!(seen["afterExpiry"], "The sum of 1 and 1 is 2.");
    assert_revoked_at_once(
        &seen["revokeStatus"],
        &seen["firstStatusAfterRevoke"],
        &seen["afterRevoke"],
    );
}

/// The Python SDK's OAuthClientProvider through the whole flow, with its
/// own checks of the PRM `resource`, the metadata `issuer` and the `iss`
/// response parameter (spec: authorization server 2 and 7), its own
/// step-up on 403, refresh ahead of expiry, and revocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_completes_oauth_steps_up_refreshes_and_is_revoked() {
    let (seen, _servers) = full_flow(venv_python(), "python_sdk_oauth.py").await;
    assert_python_sdk_flow(&seen);
}

/// The same, in front of server-everything run over stdio by the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_completes_oauth_against_a_stdio_upstream() {
    let (seen, _oauth) = full_flow_over_stdio(venv_python(), "python_sdk_oauth.py").await;
    assert_python_sdk_flow(&seen);
}

fn assert_python_sdk_flow(seen: &Value) {
    assert_eq!(seen["client_registered"], true);
    assert_eq!(
        seen["scope"], "mcp offline_access",
        "the SDK adds offline_access from the AS metadata"
    );
    assert_base_scope_tools(&seen["tools"]);
    assert_eq!(seen["echo"], "Echo: hi");
    assert_eq!(seen["sum"], "The sum of 20 and 22 is 42.");
    assert_eq!(seen["insufficient_scope_403s"], 1);
    assert_eq!(seen["authorizations_after_step_up"], 2, "one step-up");
    assert!(seen["scope_after_step_up"]
        .as_str()
        .unwrap()
        .contains("math"));
    assert_math_scope_tools(&seen["tools_after_step_up"]);
    assert_eq!(seen["progress"], json!([1.0, 2.0, 3.0]));
    assert_eq!(seen["refreshed"], true);
    assert_eq!(seen["after_expiry"], "The sum of 1 and 1 is 2.");
    assert_eq!(
        seen["authorizations_after_refresh"], 2,
        "refreshed without asking the user"
    );
    assert_revoked_at_once(
        &seen["revoke_status"],
        &seen["first_status_after_revoke"],
        &seen["after_revoke"],
    );
    assert_eq!(
        seen["authorizations_after_revoke"], 3,
        "the SDK asked the user again"
    );
}

/// The Python SDK checks the `iss` of the authorization response (RFC 9207)
/// against the issuer it discovered: a response claiming another issuer
/// (a mix-up attack) is refused before the code reaches any token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_refuses_an_authorization_response_from_another_issuer() {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::start(&everything, "").await;
    let url = oauth.mcp_url();
    let script = ["python_sdk_oauth.py", &url, "alice", "pw", "--mix-up"];
    let seen = run_client(venv_python(), args(&script)).await;
    assert!(
        seen["mix_up"]
            .as_str()
            .unwrap()
            .contains("Authorization response iss mismatch"),
        "refused for its iss: {seen}"
    );
    assert_eq!(seen["authorizations"], 1, "{seen}");
    assert_eq!(seen["token_requests"], 0, "the code was never sent: {seen}");
}

/// The MCP Inspector CLI (2.x, on Node 22) with a user's token in
/// `--header`: tools/list is filtered, tools/call works, and without the
/// token it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_cli_lists_and_calls_tools_with_a_token() {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::behind_relay(&everything, "").await;
    let url = oauth.mcp_url();
    let token = user_access_token(&oauth, "mcp math").await;
    let inspector = clients_dir().join("node_modules/.bin/mcp-inspector");
    let inspector = inspector.to_str().unwrap();
    let header = format!("Authorization: Bearer {token}");
    let base = [
        inspector,
        "--cli",
        &url,
        "--transport",
        "http",
        "--header",
        &header,
    ];
    let listed = run_client(
        node22(),
        args(&[&base[..], &["--method", "tools/list"]].concat()),
    )
    .await;
    let names: Vec<Value> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_math_scope_tools(&Value::Array(names));
    let called = run_client(
        node22(),
        args(
            &[
                &base[..],
                &[
                    "--method",
                    "tools/call",
                    "--tool-name",
                    "get-sum",
                    "--tool-arg",
                    "a=20",
                    "--tool-arg",
                    "b=22",
                ],
            ]
            .concat(),
        ),
    )
    .await;
    assert_eq!(called["content"][0]["text"], "The sum of 20 and 22 is 42.");
    let anonymous = [
        inspector,
        "--cli",
        &url,
        "--transport",
        "http",
        "--stored-auth-only",
        "--method",
        "tools/list",
    ];
    let (ok, stdout, stderr) = run_program(node22(), args(&anonymous)).await;
    assert!(!ok, "tools/list without a token was refused:\n{stdout}");
    assert!(
        oauth.exchanges().last().unwrap().contains("-> 401"),
        "{stderr}\n{:#?}",
        oauth.exchanges()
    );
}

/// The official Rust SDK `rmcp` (3.x, `auth` feature) as an OAuth client:
/// its first connection gets the 401 challenge; `OAuthState` discovers the
/// PRM and AS metadata from it, registers (DCR), builds the PKCE
/// authorization URL with `resource`; the user approves; it checks `state`
/// and `iss` on the callback and exchanges the code; then its Streamable
/// HTTP transport lists (filtered) and calls tools with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_rmcp_authorizes_and_calls_a_tool() {
    let everything = Everything::start().await;
    let oauth = OAuthGateway::behind_relay(&everything, "").await;
    // rmcp's calls have no deadline of their own.
    tokio::time::timeout(std::time::Duration::from_secs(120), rmcp_flow(&oauth))
        .await
        .expect("the rmcp flow finished within 2 minutes");
}

/// The rmcp client's steps, against `oauth`.
async fn rmcp_flow(oauth: &OAuthGateway) {
    use rmcp::model::{CallToolRequestParams, ClientConfig};
    use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState};
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::ServiceExt;

    let url = oauth.mcp_url();
    let config = || StreamableHttpClientTransportConfig::with_uri(url.clone());

    let anonymous = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config());
    let refused = ClientConfig::default()
        .serve(anonymous)
        .await
        .expect_err("the gateway refuses a client without a token");
    let challenge = refused
        .auth_challenge()
        .unwrap_or_else(|| panic!("no 401 challenge in {refused}"))
        .to_owned();
    assert!(challenge.contains("resource_metadata="), "{challenge}");

    let mut state = OAuthState::new(url.as_str(), None).await.unwrap();
    state
        .start_authorization(
            AuthorizationRequest::new("http://127.0.0.1:9/callback")
                .with_client_name("rmcp e2e")
                .with_initial_scope_selection()
                .with_challenge(challenge),
        )
        .await
        .unwrap_or_else(|e| panic!("rmcp could not start authorization: {e}"));
    let authorize_url = state.get_authorization_url().await.unwrap();
    let sent = common::browser::query(&url::Url::parse(&authorize_url).unwrap());
    assert_eq!(sent["code_challenge_method"], "S256");
    assert_eq!(sent["resource"], url, "RFC 8707 resource");
    let back = approve_in_browser(&authorize_url, "alice", "pw").await;
    state
        .handle_callback_url(back.as_str())
        .await
        .unwrap_or_else(|e| panic!("rmcp refused the callback {back}: {e}"));
    let manager = state.into_authorization_manager().expect("authorized");

    let transport = StreamableHttpClientTransport::with_client(
        AuthClient::new(reqwest::Client::new(), manager),
        config(),
    );
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let tools: Vec<Value> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| Value::String(t.name.to_string()))
        .collect();
    assert_base_scope_tools(&Value::Array(tools));
    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(rmcp::object!({"message": "hi"})),
        )
        .await
        .unwrap();
    assert_eq!(echo.content[0].as_text().unwrap().text, "Echo: hi");
    let beyond_scope = client
        .call_tool(
            CallToolRequestParams::new("get-sum").with_arguments(rmcp::object!({"a": 1, "b": 2})),
        )
        .await;
    let refusal = format!("{:?}", beyond_scope.expect_err("get-sum needs math"));
    assert!(refusal.contains("insufficient_scope"), "{refusal}");
    let seen = oauth.exchanges();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("POST /everything/mcp -> 403")
                && l.contains("error=\"insufficient_scope\"")
                && l.contains("scope=\"mcp math\"")),
        "the gateway's 403 challenge: {seen:#?}"
    );
    client.cancel().await.unwrap();
}
