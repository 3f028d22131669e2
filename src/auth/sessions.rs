//! Which subject each MCP session belongs to, with no table: the session id
//! a client sees is sealed to its owner.
//!
//! When an `initialize` through the gateway creates a session (the upstream
//! answers with `Mcp-Session-Id: <id>`), the client is given
//! `<id>.<tag>`, where the tag is an HMAC-SHA-256 (truncated to 128 bits)
//! of the upstream's name, the token's issuer and subject, and `<id>`. A
//! later request must present a sealed id whose tag matches its own token's
//! (issuer, subject); the upstream gets `<id>` back. Another subject's
//! session and an id the gateway never sealed are refused alike, as if the
//! session did not exist (404): a session id is never a credential (MCP
//! spec, "Sessions are not authentication").
//!
//! Stateless, so every replica that shares the secret (`auth.sessions.
//! secret`) recognises every session, nothing is lost on a restart, and
//! memory does not grow with sessions. Without a configured secret each
//! process draws its own, and its sessions are its own. A session ends when
//! its upstream ends it (the upstream answers 404 for the id).

use super::Principal;
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::sync::Arc;

/// Bytes of the tag kept (128 bits: forging one is 2^128 guesses).
const TAG_BYTES: usize = 16;
/// Characters of the tag in base64url.
const TAG_CHARS: usize = 22;

/// The sealing key (a clone shares it).
#[derive(Clone)]
pub struct SessionSeal(Arc<hmac::Key>);

impl SessionSeal {
    /// A seal keyed by `secret`, or by a random key when there is none.
    pub fn new(secret: Option<&[u8]>) -> Self {
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret),
            None => {
                let rng = aws_lc_rs::rand::SystemRandom::new();
                hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system's random source")
            }
        };
        Self(Arc::new(key))
    }

    fn tag(&self, upstream: &str, session_id: &[u8], principal: &Principal) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        // Each field with its length first, so no two field lists give
        // the same input.
        for field in [
            upstream.as_bytes(),
            principal.issuer.as_bytes(),
            principal.subject.as_bytes(),
            session_id,
        ] {
            ctx.update(&(field.len() as u64).to_be_bytes());
            ctx.update(field);
        }
        ctx.sign()
    }

    /// The id to give the client for the upstream's `session_id`, created
    /// by `principal` on `upstream`.
    pub fn seal(&self, upstream: &str, session_id: &[u8], principal: &Principal) -> Vec<u8> {
        let tag = self.tag(upstream, session_id, principal);
        let mut sealed = Vec::with_capacity(session_id.len() + 1 + TAG_CHARS);
        sealed.extend_from_slice(session_id);
        sealed.push(b'.');
        sealed.extend_from_slice(
            URL_SAFE_NO_PAD
                .encode(&tag.as_ref()[..TAG_BYTES])
                .as_bytes(),
        );
        sealed
    }

    /// The upstream's session id inside `presented`, if it was sealed for
    /// `principal` on `upstream` (`None`: not a sealed id, or sealed for
    /// another subject or upstream).
    pub fn open<'a>(
        &self,
        upstream: &str,
        presented: &'a [u8],
        principal: &Principal,
    ) -> Option<&'a [u8]> {
        let dot = presented.iter().rposition(|&b| b == b'.')?;
        let (session_id, tag) = (&presented[..dot], &presented[dot + 1..]);
        let given = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let expected = self.tag(upstream, session_id, principal);
        verify_slices_are_equal(&given, &expected.as_ref()[..TAG_BYTES]).ok()?;
        Some(session_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str) -> Principal {
        Principal {
            issuer: "https://issuer".into(),
            subject: subject.into(),
            client_id: None,
            scopes: Default::default(),
            expires_at: None,
            token_id: None,
            audiences: Vec::new(),
            email: None,
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_sealed_id_opens_for_its_owner_only() {
        let seal = SessionSeal::new(Some(b"0123456789abcdef0123456789abcdef"));
        let alice = principal("alice");
        let sealed = seal.seal("files", b"up.stream-1", &alice);
        assert_eq!(sealed.len(), b"up.stream-1".len() + 1 + TAG_CHARS);
        assert_eq!(
            seal.open("files", &sealed, &alice),
            Some(&b"up.stream-1"[..])
        );
        let refused = None;
        assert_eq!(seal.open("files", &sealed, &principal("bob")), refused);
        assert_eq!(seal.open("other", &sealed, &alice), refused);
        assert_eq!(seal.open("files", b"up.stream-1", &alice), refused);
        assert_eq!(seal.open("files", b"plain", &alice), refused);
        let mut tampered = sealed.clone();
        tampered[0] = b'x';
        assert_eq!(seal.open("files", &tampered, &alice), refused);
    }

    #[test]
    fn replicas_sharing_the_secret_open_each_others_ids() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let alice = principal("alice");
        let sealed = SessionSeal::new(Some(secret)).seal("files", b"s1", &alice);
        assert!(SessionSeal::new(Some(secret))
            .open("files", &sealed, &alice)
            .is_some());
        assert!(SessionSeal::new(None)
            .open("files", &sealed, &alice)
            .is_none());
    }
}
