use super::*;

fn rule(p: &str, scopes: &[&str]) -> ToolRule {
    ToolRule {
        pattern: Glob::new(p),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn set(scopes: &[&str]) -> BTreeSet<String> {
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

fn policy(unlisted: UnlistedTools) -> ScopePolicy {
    ScopePolicy::new(
        vec!["mcp".into()],
        [("resources/read".to_owned(), vec!["files".to_owned()])].into(),
        vec![
            rule("admin_*", &["admin"]),
            rule("admin_read*", &["admin:read"]),
            rule("add", &["math"]),
            rule("*_delete", &["danger"]),
        ],
        unlisted,
        true,
        [
            "mcp",
            "files",
            "admin",
            "admin:read",
            "math",
            "danger",
            OFFLINE_ACCESS,
        ]
        .map(String::from)
        .to_vec(),
    )
}

#[test]
fn globs_match_whole_names_character_by_character() {
    let g = Glob::new("get_*");
    assert!(g.matches("get_time"));
    assert!(g.matches("get_"));
    assert!(!g.matches("Get_time"));
    assert!(!g.matches("xget_time"));
    assert!(Glob::new("a?c").matches("aéc"));
    assert!(!Glob::new("a?c").matches("ac"));
    assert!(Glob::new("*").matches(""));
    assert!(Glob::new("a**b").matches("ab"));
}

#[test]
fn glob_coverage_detects_shadowed_patterns() {
    assert!(Glob::new("*").covers(&Glob::new("a*")));
    assert!(Glob::new("*a*").covers(&Glob::new("a*")));
    assert!(Glob::new("a*").covers(&Glob::new("a?")));
    assert!(!Glob::new("a?").covers(&Glob::new("a*")));
    assert!(!Glob::new("a*").covers(&Glob::new("*a")));
    assert!(Glob::new("a*").covers(&Glob::new("abc")));
}

#[test]
fn exact_name_beats_any_glob() {
    let p = ScopePolicy::new(
        vec![],
        HashMap::new(),
        vec![rule("*", &["any"]), rule("add", &["math"])],
        UnlistedTools::Deny,
        true,
        vec![],
    );
    assert_eq!(
        p.requirement(Some("tools/call"), Some("add")),
        Requirement::Scopes(set(&["math"]))
    );
    assert_eq!(
        p.requirement(Some("tools/call"), Some("echo")),
        Requirement::Scopes(set(&["any"]))
    );
}

#[test]
fn most_specific_glob_wins() {
    let p = policy(UnlistedTools::Deny);
    assert_eq!(
        p.requirement(Some("tools/call"), Some("admin_read_logs")),
        Requirement::Scopes(set(&["mcp", "admin:read"]))
    );
    assert_eq!(
        p.requirement(Some("tools/call"), Some("admin_reboot")),
        Requirement::Scopes(set(&["mcp", "admin"]))
    );
    // `*_delete` has 7 literal characters, `admin_*` only 6.
    assert_eq!(
        p.requirement(Some("tools/call"), Some("admin_delete")),
        Requirement::Scopes(set(&["mcp", "danger"]))
    );
}

#[test]
fn unlisted_tools_are_denied_or_get_the_base_scopes() {
    assert_eq!(
        policy(UnlistedTools::Deny).requirement(Some("tools/call"), Some("echo")),
        Requirement::Forbidden
    );
    assert_eq!(
        policy(UnlistedTools::Base).requirement(Some("tools/call"), Some("echo")),
        Requirement::Scopes(set(&["mcp"]))
    );
}

#[test]
fn names_differing_by_case_or_lookalike_characters_are_other_tools() {
    let p = policy(UnlistedTools::Deny);
    assert_eq!(
        p.requirement(Some("tools/call"), Some("ADD")),
        Requirement::Forbidden
    );
    // Cyrillic `а` (U+0430) instead of Latin `a`.
    assert_eq!(
        p.requirement(Some("tools/call"), Some("\u{430}dd")),
        Requirement::Forbidden
    );
}

#[test]
fn method_scopes_add_to_the_base() {
    let p = policy(UnlistedTools::Deny);
    assert_eq!(
        p.requirement(Some("resources/read"), None),
        Requirement::Scopes(set(&["mcp", "files"]))
    );
    assert_eq!(
        p.requirement(Some("tools/list"), None),
        Requirement::Scopes(set(&["mcp"]))
    );
    assert_eq!(
        p.requirement(None, None),
        Requirement::Scopes(set(&["mcp"]))
    );
}

#[test]
fn one_forbidden_message_refuses_a_batch() {
    let p = policy(UnlistedTools::Deny);
    let granted = set(&["mcp", "math", "admin"]);
    assert!(p
        .check(
            &granted,
            [
                (Some("tools/list"), None),
                (Some("tools/call"), Some("add"))
            ]
        )
        .is_ok());
    assert_eq!(
        p.check(
            &granted,
            [
                (Some("tools/call"), Some("add")),
                (Some("tools/call"), Some("x_delete"))
            ]
        ),
        Err(PolicyDenial::InsufficientScope {
            needed: set(&["mcp", "math", "danger"]),
            what: "tools/call of `x_delete`".into()
        })
    );
    assert_eq!(
        p.check(
            &granted,
            [
                (Some("tools/call"), Some("add")),
                (Some("tools/call"), Some("echo"))
            ]
        ),
        Err(PolicyDenial::ForbiddenTool("echo".into()))
    );
}

#[test]
fn challenge_scope_keeps_relevant_granted_scopes_and_never_offline_access() {
    let p = policy(UnlistedTools::Deny);
    let granted = set(&["mcp", "math", "openid", OFFLINE_ACCESS]);
    let needed = set(&["mcp", "danger"]);
    assert_eq!(
        p.challenge_scope(&needed, &granted),
        vec!["mcp", "math", "danger"]
    );
    assert!(!p.scopes_supported().contains(&OFFLINE_ACCESS.to_owned()));
}

#[test]
fn tools_list_filter_uses_the_call_requirement() {
    let p = policy(UnlistedTools::Deny);
    let granted = set(&["mcp", "math"]);
    assert!(p.may_call(&granted, "add"));
    assert!(!p.may_call(&granted, "admin_x"));
    assert!(!p.may_call(&granted, "echo"));
}

// Issue 11.6: well-formed methods outside MCP follow `unlisted_methods`.
#[test]
fn unlisted_methods_get_the_base_scopes_or_are_denied() {
    let base = policy(UnlistedTools::Deny);
    assert_eq!(
        base.requirement(Some("vendor/extension"), None),
        Requirement::Scopes(set(&["mcp"]))
    );
    let deny = policy(UnlistedTools::Deny)
        .with_unlisted_methods(UnlistedMethods::Deny, &["ping", "resources/read"]);
    assert_eq!(
        deny.requirement(Some("vendor/extension"), None),
        Requirement::Forbidden
    );
    assert_eq!(
        deny.check(&set(&["mcp"]), [(Some("vendor/extension"), None)]),
        Err(PolicyDenial::ForbiddenMethod("vendor/extension".into()))
    );
    assert_eq!(
        deny.requirement(Some("ping"), None),
        Requirement::Scopes(set(&["mcp"]))
    );
    assert_eq!(
        deny.requirement(Some("resources/read"), None),
        Requirement::Scopes(set(&["mcp", "files"])),
        "listed under `methods`"
    );
    assert_eq!(
        deny.requirement(None, None),
        Requirement::Scopes(set(&["mcp"])),
        "a response"
    );
}
