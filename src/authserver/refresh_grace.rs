//! The refresh reuse grace window (`refresh_reuse_grace`, off by default).
//!
//! A refresh token is single use: its second use is taken for theft and
//! revokes the family (RFC 9700 §4.14.2). But honest clients send the same
//! refresh twice: a retry after a lost answer, or two requests that a
//! balancer sends to two replicas at once. With a grace window, the
//! winner's answer is kept for that long, and the exact same request (same
//! refresh token, client, `scope` and `resource`) gets it again instead of
//! revoking the family. The trade-off: within the window, whoever else
//! holds the token gets those same tokens rather than tripping the reuse
//! detection; after it, reuse revokes as ever.
//!
//! The answer holds live tokens, so it is stored sealed (AES-256-GCM) with
//! a key derived from the presented refresh token, which the store never
//! holds (it keys the entry by the token's SHA-256): the database alone
//! cannot open it. The request's fingerprint is the associated data, so a
//! different request cannot open it either.

use super::flows::{entry, put_entry};
use crate::store::{Store, StoreError};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::time::Duration;

const KIND: &str = "refresh_answer";

/// How long a repeated request waits for the first one's answer to be
/// stored (they may arrive together on two replicas).
const WAIT_FOR_WINNER: Duration = Duration::from_secs(2);

/// What makes two refresh requests "the same": the client and the
/// parameters besides the token.
pub(super) fn fingerprint(client_id: &str, scope: Option<&str>, resource: Option<&str>) -> String {
    serde_json::json!([client_id, scope, resource]).to_string()
}

fn key(presented: &str) -> LessSafeKey {
    let secret = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, presented.as_bytes()),
        b"mcpgw refresh reuse grace",
    );
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, secret.as_ref()).expect("a 256-bit key"))
}

/// Keeps `answer`, the tokens the first use of `presented` got, for `grace`.
pub(super) async fn remember(
    store: &dyn Store,
    presented: &str,
    fingerprint: &str,
    answer: &Value,
    grace: Duration,
) -> Result<(), StoreError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| StoreError("no random source".into()))?;
    let mut sealed = answer.to_string().into_bytes();
    key(presented)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(fingerprint.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| StoreError("sealing a refresh answer failed".into()))?;
    let mut stored = nonce.to_vec();
    stored.extend_from_slice(&sealed);
    let expires_at = crate::auth::now_millis()
        .saturating_add(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
    put_entry(
        store,
        KIND,
        presented,
        &STANDARD_NO_PAD.encode(stored),
        expires_at,
    )
    .await
}

/// The first answer to this same request, if it is within its grace
/// window (waiting a moment for a first use still being answered).
pub(super) async fn replay(
    store: &dyn Store,
    presented: &str,
    fingerprint: &str,
) -> Result<Option<Value>, StoreError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_WINNER;
    loop {
        if let Some((stored, _)) = entry::<String>(store, KIND, presented).await? {
            return Ok(open(presented, fingerprint, &stored));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The answer sealed in `stored`, if `presented` and `fingerprint` are the
/// ones it was sealed for.
fn open(presented: &str, fingerprint: &str, stored: &str) -> Option<Value> {
    let bytes = STANDARD_NO_PAD.decode(stored).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let mut sealed = sealed.to_vec();
    let plain = key(presented)
        .open_in_place(
            Nonce::try_assume_unique_for_key(nonce).ok()?,
            Aad::from(fingerprint.as_bytes()),
            &mut sealed,
        )
        .ok()?;
    serde_json::from_slice(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemoryStore, StateStore};
    use sha2::{Digest, Sha256};

    #[tokio::test]
    async fn the_same_request_gets_the_answer_and_nothing_else_opens_it() {
        let store = MemoryStore::default();
        let same = fingerprint("c1", None, Some("https://gw/mcp"));
        let answer = serde_json::json!({"access_token": "a", "refresh_token": "r2"});
        remember(&store, "r1", &same, &answer, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(replay(&store, "r1", &same).await.unwrap(), Some(answer));
        let narrower = fingerprint("c1", Some("mcp"), Some("https://gw/mcp"));
        assert_eq!(replay(&store, "r1", &narrower).await.unwrap(), None);
        let (stored, _) = store
            .state(KIND, &Sha256::digest(b"r1"), 0)
            .await
            .unwrap()
            .unwrap();
        assert!(!stored.contains("r2"), "sealed at rest");
        let stored: String = serde_json::from_str(&stored).unwrap();
        assert_eq!(open("another token", &same, &stored), None);
    }
}
