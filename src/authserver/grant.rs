//! The grant types this server implements: one closed set, named once. A
//! new grant type is a variant here, its handler in `token`, and its rules
//! in `registration`.

use serde::{Deserialize, Serialize};

/// An OAuth grant type (RFC 6749 §4, OAuth 2.1 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// Authorization code with PKCE.
    AuthorizationCode,
    /// Refresh token, rotated on every use.
    RefreshToken,
    /// A confidential client acting for itself.
    ClientCredentials,
}

impl GrantType {
    /// Every grant type, as published in `grant_types_supported`.
    pub const ALL: [Self; 3] = [
        Self::AuthorizationCode,
        Self::RefreshToken,
        Self::ClientCredentials,
    ];

    /// The registered name (also the metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }

    /// The grant type a name stands for, if this server implements it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::GrantType;

    #[test]
    fn names_round_trip_and_match_serde() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()), Some(g));
            assert_eq!(serde_json::to_value(g).unwrap(), g.as_str());
        }
        assert_eq!(GrantType::parse("password"), None);
        assert_eq!(GrantType::parse("implicit"), None);
    }
}
