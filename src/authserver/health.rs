//! `/healthz` and `/readyz` for a load balancer: liveness (the process
//! answers HTTP) and readiness (it can also reach its store, which a
//! replica needs for every authorization-server request). Both are
//! `no-store` JSON; neither tells more than up or down.

use super::AsState;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Longest a readiness check waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves.
pub async fn live() -> Response {
    answer(StatusCode::OK, "ok")
}

/// `GET /readyz`: 200 when the store answers within 2 s, else 503 (the
/// load balancer sends the replica nothing until it is back).
pub async fn ready(State(state): State<Arc<AsState>>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => answer(StatusCode::OK, "ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: the store does not answer");
            answer(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
        Err(_) => {
            tracing::warn!("not ready: the store did not answer within 2 s");
            answer(StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

fn answer(status: StatusCode, what: &str) -> Response {
    let mut resp = (status, Json(json!({ "status": what }))).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
