//! PKCE (RFC 7636) with the S256 method only (OAuth 2.1 §4.1.1): the
//! challenge an authorization request carries, the verifier the token
//! request proves it with.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// An S256 `code_challenge`: base64url characters, 43 to 128 of them.
/// Kept in the store with its code as the text it was checked as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct CodeChallenge(String);

/// Why an authorization request's PKCE parameters are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// No challenge, or a method other than S256 (`plain` included).
    S256Required,
    /// An S256 challenge that is not base64url of the right length.
    Malformed,
}

impl CodeChallenge {
    /// Reads `code_challenge` and `code_challenge_method`.
    pub fn parse(challenge: Option<&str>, method: Option<&str>) -> Result<Self, ChallengeError> {
        match (challenge, method) {
            (Some(c), Some("S256")) if (43..=128).contains(&c.len()) && is_base64url(c) => {
                Ok(Self(c.to_owned()))
            }
            (Some(_), Some("S256")) => Err(ChallengeError::Malformed),
            _ => Err(ChallengeError::S256Required),
        }
    }

    /// Whether `verifier` answers this challenge (compared in constant time).
    pub fn is_answered_by(&self, verifier: &CodeVerifier) -> bool {
        let computed = s256(&verifier.0);
        verify_slices_are_equal(computed.as_bytes(), self.0.as_bytes()).is_ok()
    }
}

/// The S256 challenge of `verifier` (RFC 7636 §4.2): what the gateway
/// checks as a server and sends as a client of identity providers.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A `code_verifier`: 43 to 128 unreserved characters (RFC 7636 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeVerifier(String);

impl CodeVerifier {
    /// The verifier, if it has the form RFC 7636 requires.
    pub fn parse(verifier: &str) -> Option<Self> {
        let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        ((43..=128).contains(&verifier.len()) && verifier.bytes().all(unreserved))
            .then(|| Self(verifier.to_owned()))
    }
}

fn is_base64url(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_7636_appendix_b_verifier_answers_its_challenge() {
        let challenge = CodeChallenge::parse(Some(CHALLENGE), Some("S256")).unwrap();
        assert!(challenge.is_answered_by(&CodeVerifier::parse(VERIFIER).unwrap()));
        let other = CodeVerifier::parse(&"a".repeat(43)).unwrap();
        assert!(!challenge.is_answered_by(&other));
    }

    #[test]
    fn only_s256_with_a_well_formed_challenge_is_accepted() {
        assert_eq!(
            CodeChallenge::parse(Some(CHALLENGE), Some("plain")),
            Err(ChallengeError::S256Required)
        );
        assert_eq!(
            CodeChallenge::parse(None, None),
            Err(ChallengeError::S256Required)
        );
        assert_eq!(
            CodeChallenge::parse(Some("short"), Some("S256")),
            Err(ChallengeError::Malformed)
        );
        assert_eq!(
            CodeChallenge::parse(Some(&"+".repeat(43)), Some("S256")),
            Err(ChallengeError::Malformed)
        );
    }

    #[test]
    fn verifiers_need_43_to_128_unreserved_characters() {
        assert!(CodeVerifier::parse(&"a".repeat(42)).is_none());
        assert!(CodeVerifier::parse(&"a".repeat(129)).is_none());
        assert!(CodeVerifier::parse(&format!("{}!", "a".repeat(42))).is_none());
        assert!(CodeVerifier::parse(&"a-._~".repeat(9)).is_some());
    }
}
