//! Argon2id password hashes for the users in the configuration.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use std::sync::LazyLock;

/// Hashes `password` with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A real hash of a password nobody knows: an unknown user's login costs
/// the same as a wrong password, so timing does not tell which users exist.
static DUMMY: LazyLock<String> =
    LazyLock::new(|| hash_password(&super::random_token(24)).expect("argon2 hashes"));

/// Whether `password` matches `hash` (`None`: unknown user, always false).
pub fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(&DUMMY)) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    matches && hash.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_users_never_do() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(&h), "correct horse"));
        assert!(!verify_password(Some(&h), "wrong"));
        assert!(!verify_password(None, "correct horse"));
    }
}
