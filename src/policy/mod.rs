//! Which scopes a request needs, from the per-upstream YAML policy.
//!
//! A message needs the upstream's base scopes, plus the scopes of its
//! JSON-RPC method when the policy lists one, plus, for `tools/call`, the
//! scopes of the rule matching the tool name. Tool rules are matched in this
//! order, first match wins:
//!
//! 1. an exact name (a pattern without `*` or `?`);
//! 2. the most specific glob: the one with the most literal characters, then
//!    the one with fewer `*`, then the pattern that sorts first;
//! 3. `unlisted_tools`: `deny` (the default) refuses the call whatever the
//!    token holds, `base` allows it with the scopes above.
//!
//! Names are compared character for character as the client sent them: no
//! case folding, no Unicode normalisation, so a look-alike name is a
//! different tool (and usually an unlisted one).
//!
//! A JSON-RPC method that is neither an MCP client method nor listed under
//! `methods` (a protocol extension) follows `unlisted_methods`: `base` (the
//! default) needs the base scopes, `deny` refuses it. Method names a reader
//! could take for a known one (`Tools/Call`, `tools/call `) never get here:
//! `mcp` refuses them while parsing.

mod glob;

pub use glob::Glob;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// What a well-formed JSON-RPC method that is neither an MCP client method
/// nor listed under `methods` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedMethods {
    /// Allowed with the base scopes, so protocol extensions keep working.
    #[default]
    Base,
    /// Refused whatever the token's scopes.
    Deny,
}

/// What a `tools/call` of a tool no rule matches needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedTools {
    /// Refused whatever the token's scopes.
    Deny,
    /// Allowed with the base scopes (and the `tools/call` method scopes).
    Base,
}

/// `offline_access` asks the AS for a refresh token; it is not a permission
/// of the resource, so it never appears in challenges or `scopes_supported`.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// One tool rule: a pattern and the scopes a call of a matching tool needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRule {
    /// The pattern.
    pub pattern: Glob,
    /// Scopes it requires (besides the base and method scopes).
    pub scopes: Vec<String>,
}

/// What a message needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// These scopes, all of them.
    Scopes(BTreeSet<String>),
    /// Nothing allows it (a tool `unlisted_tools: deny` refuses).
    Forbidden,
}

/// Why a request was refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyDenial {
    /// The token lacks scopes; `needed` is everything the refused messages
    /// need (held or not).
    InsufficientScope {
        /// Scopes the request needs.
        needed: BTreeSet<String>,
        /// The first refused message's method (and tool), for the error text.
        what: String,
    },
    /// A tool no rule allows.
    ForbiddenTool(String),
    /// A method outside MCP and the policy, with `unlisted_methods: deny`.
    ForbiddenMethod(String),
}

/// The compiled policy of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopePolicy {
    /// Scopes every request needs.
    pub base: Vec<String>,
    /// Extra scopes per JSON-RPC method.
    pub methods: HashMap<String, Vec<String>>,
    exact: HashMap<String, Vec<String>>,
    /// Glob rules, most specific first.
    globs: Vec<ToolRule>,
    /// What unlisted tools need.
    pub unlisted: UnlistedTools,
    /// What methods outside `known_methods` and `methods` need.
    pub unlisted_methods: UnlistedMethods,
    /// The protocol's own methods, which never count as unlisted.
    known_methods: &'static [&'static str],
    /// Whether `tools/list` results are filtered to callable tools.
    pub filter_tools_list: bool,
    /// The scopes this upstream knows, in configuration order.
    pub scopes: Vec<String>,
}

impl ScopePolicy {
    /// Builds a policy from its rules (already validated by `config`).
    pub fn new(
        base: Vec<String>,
        methods: HashMap<String, Vec<String>>,
        tools: Vec<ToolRule>,
        unlisted: UnlistedTools,
        filter_tools_list: bool,
        scopes: Vec<String>,
    ) -> Self {
        let (exact, mut globs): (Vec<ToolRule>, Vec<ToolRule>) =
            tools.into_iter().partition(|r| r.pattern.is_exact());
        globs.sort_by(|a, b| a.pattern.cmp_specificity(&b.pattern));
        Self {
            base,
            methods,
            exact: exact
                .into_iter()
                .map(|r| (r.pattern.as_str().to_owned(), r.scopes))
                .collect(),
            globs,
            unlisted,
            unlisted_methods: UnlistedMethods::Base,
            known_methods: &[],
            filter_tools_list,
            scopes,
        }
    }

    /// Sets what methods outside `known` (the protocol's own) and
    /// `methods` need (default `base`).
    pub fn with_unlisted_methods(
        mut self,
        unlisted_methods: UnlistedMethods,
        known: &'static [&'static str],
    ) -> Self {
        self.unlisted_methods = unlisted_methods;
        self.known_methods = known;
        self
    }

    /// Glob rules in matching order (most specific first).
    pub fn globs(&self) -> &[ToolRule] {
        &self.globs
    }

    /// The metric label of a tool: the rule that matches it (an exact name
    /// or a pattern from the configuration), or `other`, so label values
    /// are bounded by the configuration, never by client input.
    pub fn tool_label(&self, tool: &str) -> &str {
        if let Some((name, _)) = self.exact.get_key_value(tool) {
            return name;
        }
        self.globs
            .iter()
            .find(|r| r.pattern.matches(tool))
            .map_or("other", |r| r.pattern.as_str())
    }

    /// The rule scopes a call of `tool` needs, or `None` when forbidden.
    fn tool_scopes(&self, tool: &str) -> Option<&[String]> {
        if let Some(s) = self.exact.get(tool) {
            return Some(s);
        }
        if let Some(rule) = self.globs.iter().find(|r| r.pattern.matches(tool)) {
            return Some(&rule.scopes);
        }
        match self.unlisted {
            UnlistedTools::Deny => None,
            UnlistedTools::Base => Some(&[]),
        }
    }

    /// The scope lists one message draws on (base, method, tool rule), or
    /// `None` when its tool or method is forbidden. Borrowed, so that the
    /// allowed path of every request allocates nothing.
    fn rule_scopes(&self, method: Option<&str>, tool: Option<&str>) -> Option<[&[String]; 3]> {
        let listed = method.and_then(|m| self.methods.get(m));
        if let (Some(m), None, UnlistedMethods::Deny) = (method, listed, self.unlisted_methods) {
            if !self.known_methods.contains(&m) {
                return None;
            }
        }
        let by_method = listed.map_or(&[][..], Vec::as_slice);
        let by_tool = match tool {
            Some(tool) => self.tool_scopes(tool)?,
            None => &[],
        };
        Some([&self.base, by_method, by_tool])
    }

    /// What one message (`method`, and `tool` for `tools/call`) needs. A
    /// message without a method (a response to the server) needs the base.
    pub fn requirement(&self, method: Option<&str>, tool: Option<&str>) -> Requirement {
        match self.rule_scopes(method, tool) {
            Some(lists) => {
                Requirement::Scopes(lists.iter().flat_map(|l| l.iter().cloned()).collect())
            }
            None => Requirement::Forbidden,
        }
    }

    /// Whether a token holding `granted` may call `tool`.
    pub fn may_call(&self, granted: &BTreeSet<String>, tool: &str) -> bool {
        self.rule_scopes(Some("tools/call"), Some(tool))
            .is_some_and(|lists| lists.iter().all(|l| l.iter().all(|s| granted.contains(s))))
    }

    /// Checks every message of a request; one refused message refuses the
    /// whole request.
    pub fn check<'a>(
        &self,
        granted: &BTreeSet<String>,
        messages: impl IntoIterator<Item = (Option<&'a str>, Option<&'a str>)> + Clone,
    ) -> Result<(), PolicyDenial> {
        let allowed = messages.clone().into_iter().all(|(method, tool)| {
            self.rule_scopes(method, tool)
                .is_some_and(|lists| lists.iter().all(|l| l.iter().all(|s| granted.contains(s))))
        });
        if allowed {
            return Ok(());
        }
        let mut needed = BTreeSet::new();
        let mut what = None;
        for (method, tool) in messages {
            match self.requirement(method, tool) {
                Requirement::Forbidden => {
                    return Err(match tool {
                        Some(tool) => PolicyDenial::ForbiddenTool(tool.to_owned()),
                        None => {
                            PolicyDenial::ForbiddenMethod(method.unwrap_or_default().to_owned())
                        }
                    })
                }
                Requirement::Scopes(s) => {
                    if !s.is_subset(granted) && what.is_none() {
                        what = Some(match tool {
                            Some(t) => format!("tools/call of `{}`", t.escape_default()),
                            None => format!("`{}`", method.unwrap_or("response").escape_default()),
                        });
                    }
                    needed.extend(s);
                }
            }
        }
        Err(PolicyDenial::InsufficientScope {
            needed,
            what: what.unwrap_or_default(),
        })
    }

    /// The `scope` of a 403 challenge: what the request needs plus the
    /// granted scopes this upstream knows (so that re-authorising with it
    /// loses nothing still relevant), never `offline_access`.
    pub fn challenge_scope(
        &self,
        needed: &BTreeSet<String>,
        granted: &BTreeSet<String>,
    ) -> Vec<String> {
        let relevant =
            |s: &String| needed.contains(s) || (granted.contains(s) && self.scopes.contains(s));
        let mut out: Vec<String> = self
            .scopes
            .iter()
            .filter(|s| relevant(s))
            .cloned()
            .collect();
        out.extend(needed.iter().filter(|s| !self.scopes.contains(s)).cloned());
        out.retain(|s| s != OFFLINE_ACCESS);
        out
    }

    /// The scopes published in the PRM document (`offline_access` left out).
    pub fn scopes_supported(&self) -> Vec<String> {
        self.scopes
            .iter()
            .filter(|s| *s != OFFLINE_ACCESS)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests;
