//! The `access` rules: whether a person who signed in through a provider
//! is admitted, and which scopes they may grant (the union of the scopes of
//! every rule that matches; no match, no admission).

use crate::config::AccessRule;
use serde_json::Value;
use std::collections::BTreeSet;

/// The scopes `rules` let a person of provider `idp` with ID-token (and
/// userinfo) `claims` grant; `None` when no rule admits them.
pub fn admitted(rules: &[AccessRule], idp: &str, claims: &Value) -> Option<BTreeSet<String>> {
    let mut scopes = None::<BTreeSet<String>>;
    for rule in rules.iter().filter(|r| matches(r, idp, claims)) {
        scopes
            .get_or_insert_with(BTreeSet::new)
            .extend(rule.scopes.iter().cloned());
    }
    scopes
}

fn matches(rule: &AccessRule, idp: &str, claims: &Value) -> bool {
    rule.idp.as_deref().is_none_or(|i| i == idp)
        && rule
            .email_domain
            .as_deref()
            .is_none_or(|d| email_domain(claims).as_deref() == Some(d))
        && rule
            .email_verified
            .is_none_or(|v| truth(&claims["email_verified"]) == Some(v))
        && rule
            .claims
            .iter()
            .all(|(name, want)| holds(&claims[name.as_str()], want))
}

/// The domain of the `email` claim, lowercase.
fn email_domain(claims: &Value) -> Option<String> {
    let email = claims["email"].as_str()?;
    let (local, domain) = email.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// A boolean claim; some providers send `"true"` as a string.
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// Whether a claim is `want`, or a list holding it (strings compared as
/// they are; a boolean or number by its JSON text).
fn holds(claim: &Value, want: &str) -> bool {
    let is = |v: &Value| match v {
        Value::String(s) => s == want,
        Value::Bool(b) => want == if *b { "true" } else { "false" },
        Value::Number(n) => n.as_f64().is_some_and(|n| want.parse() == Ok(n)),
        _ => false,
    };
    match claim {
        Value::Array(items) => items.iter().any(is),
        other => is(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(
        idp: Option<&str>,
        domain: Option<&str>,
        claims: &[(&str, &str)],
        scopes: &[&str],
    ) -> AccessRule {
        AccessRule {
            idp: idp.map(String::from),
            email_domain: domain.map(String::from),
            email_verified: domain.map(|_| true),
            claims: claims
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn set(scopes: &[&str]) -> Option<BTreeSet<String>> {
        Some(scopes.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn matching_rules_add_up_and_no_match_is_no_admission() {
        let rules = [
            rule(Some("corp"), Some("example.com"), &[], &["mcp:read"]),
            rule(
                Some("corp"),
                None,
                &[("groups", "mcp-admins")],
                &["mcp:read", "mcp:admin"],
            ),
            rule(Some("other"), None, &[], &["other"]),
        ];
        let alice = json!({"email": "Alice@Example.COM", "email_verified": true, "groups": ["mcp-admins", "x"]});
        assert_eq!(
            admitted(&rules, "corp", &alice),
            set(&["mcp:admin", "mcp:read"])
        );
        let bob = json!({"email": "bob@example.com", "email_verified": "true", "groups": "staff"});
        assert_eq!(admitted(&rules, "corp", &bob), set(&["mcp:read"]));
        let unverified = json!({"email": "eve@example.com", "email_verified": false});
        assert_eq!(admitted(&rules, "corp", &unverified), None);
        let lookalike = json!({"email": "eve@example.com.evil.io", "email_verified": true});
        assert_eq!(admitted(&rules, "corp", &lookalike), None);
        let subdomain = json!({"email": "eve@mail.example.com", "email_verified": true});
        assert_eq!(
            admitted(&rules, "corp", &subdomain),
            None,
            "exact domain only"
        );
        assert_eq!(admitted(&rules, "other", &json!({})), set(&["other"]));
        assert_eq!(admitted(&rules, "third", &alice), None);
    }

    #[test]
    fn claims_compare_as_strings_or_list_members() {
        let r = [rule(
            None,
            None,
            &[("hd", "example.com"), ("admin", "true")],
            &["s"],
        )];
        assert_eq!(
            admitted(&r, "g", &json!({"hd": "example.com", "admin": true})),
            set(&["s"])
        );
        assert_eq!(
            admitted(&r, "g", &json!({"hd": "example.com", "admin": false})),
            None
        );
        assert_eq!(
            admitted(&r, "g", &json!({"hd": ["example.com"], "admin": "true"})),
            set(&["s"])
        );
        assert_eq!(
            admitted(&r, "g", &json!({"admin": true})),
            None,
            "missing claim"
        );
    }
}
