//! An upstream that is a local program speaking MCP over stdio, as
//! configured: the program (found and checked executable when the file is
//! loaded), its arguments, the only environment it gets, and how its
//! processes are shared and bounded (see `crate::stdio`).

use super::raw::RawUpstream;
use super::ConfigError;
use serde::Deserialize;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which callers share one process of a stdio upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// One process per MCP session: nothing one session does is seen by
    /// another.
    #[default]
    PerSession,
    /// One process per subject (user), shared by that subject's sessions.
    PerSubject,
    /// One process for every caller: for stateless servers only.
    Shared,
}

impl Isolation {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerSession => "per_session",
            Self::PerSubject => "per_subject",
            Self::Shared => "shared",
        }
    }
}

/// How to run a stdio upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct StdioCommand {
    /// The program, as an absolute path (searched on the child's `PATH`
    /// when configured as a bare name).
    pub program: PathBuf,
    /// Its arguments, passed as a list (no shell).
    pub args: Vec<String>,
    /// The child's whole environment: the inherited names, then `env`.
    pub env: Vec<(String, String)>,
    /// Its working directory; the gateway's when unset.
    pub cwd: Option<PathBuf>,
    /// Which callers share a process.
    pub isolation: Isolation,
    /// Most processes running at once for this upstream.
    pub max_processes: usize,
    /// A process without requests for this long is stopped.
    pub idle_timeout: Duration,
    /// How long a new process has to answer `initialize`.
    pub startup_timeout: Duration,
    /// Whether the caller's identity is passed as environment variables.
    pub caller_env: bool,
}

impl StdioCommand {
    /// The command line, for logs and `check-config`.
    pub fn describe(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|a| format!("{a:?}")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Environment names a child gets from the gateway unless `inherit_env`
/// says otherwise: what `npx` and `uvx` need to run at all. Nothing that
/// could hold a secret.
const DEFAULT_INHERITED: &[&str] = &["PATH", "HOME", "LANG"];

const DEFAULT_MAX_PROCESSES: usize = 50;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// The names only a stdio upstream takes, for the error when `url` is set.
fn stdio_keys_set(up: &RawUpstream) -> Vec<&'static str> {
    [
        ("env", !up.env.is_empty()),
        ("inherit_env", up.inherit_env.is_some()),
        ("cwd", up.cwd.is_some()),
        ("isolation", up.isolation.is_some()),
        ("max_processes", up.max_processes.is_some()),
        ("idle_timeout", up.idle_timeout.is_some()),
        ("startup_timeout", up.startup_timeout.is_some()),
        ("caller_env", up.caller_env),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Refuses stdio-only settings on an HTTP upstream.
pub(super) fn refuse_stdio_keys(up: &RawUpstream, at: &str, errors: &mut Vec<ConfigError>) {
    for key in stdio_keys_set(up) {
        errors.push(ConfigError::new(
            &format!("{at}.{key}"),
            format!("`{key}` applies to a stdio upstream (`command`), not to one with a `url`"),
            "remove it, or replace `url` with `command`",
        ));
    }
}

/// The stdio settings of the upstream at `at`, whose `command` is set.
pub(super) fn validate_stdio(
    up: &RawUpstream,
    command: &[String],
    at: &str,
    auth_disabled: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<StdioCommand> {
    let before = errors.len();
    let isolation = up.isolation.unwrap_or_default();
    let env = child_env(up, at, errors);
    // Absolute, so that a relative program is found (and run) once under
    // it, not under `cwd/cwd`.
    let cwd = up
        .cwd
        .as_ref()
        .map(|dir| std::path::absolute(dir).unwrap_or_else(|_| PathBuf::from(dir)));
    if let Some(dir) = &cwd {
        if !dir.is_dir() {
            errors.push(ConfigError::new(
                &format!("{at}.cwd"),
                format!("`{}` is not a directory", dir.display()),
                "create it, or point `cwd` at an existing directory",
            ));
        }
    }
    let program = match command.split_first() {
        None => {
            errors.push(ConfigError::new(
                &format!("{at}.command"),
                "the command is empty".to_owned(),
                "write the program and its arguments as a list, e.g. `[npx, -y, \"@modelcontextprotocol/server-everything\"]`",
            ));
            None
        }
        Some((program, _)) => find_program(program, &env, cwd.as_deref())
            .map_err(|m| {
                errors.push(ConfigError::new(
                    &format!("{at}.command[0]"),
                    m,
                    "install it, give its absolute path, or list a `PATH` that has it in `env`",
                ))
            })
            .ok(),
    };
    if isolation == Isolation::PerSubject && auth_disabled {
        errors.push(ConfigError::new(
            &format!("{at}.isolation"),
            "`per_subject` needs callers with a subject, and auth is disabled".to_owned(),
            "use `per_session` or `shared`, or enable auth",
        ));
    }
    if up.caller_env && (auth_disabled || isolation == Isolation::Shared) {
        errors.push(ConfigError::new(
            &format!("{at}.caller_env"),
            "a caller's identity can be given only to a process that serves one caller, with auth on"
                .to_owned(),
            "use `isolation: per_session` or `per_subject` with auth, or remove `caller_env`",
        ));
    }
    if up.max_processes == Some(0) {
        errors.push(ConfigError::new(
            &format!("{at}.max_processes"),
            "0 processes would refuse every session".to_owned(),
            "set at least 1",
        ));
    }
    let positive = |value: Option<&super::raw::HumanDuration>, key: &str, default: Duration| {
        let d = value.map_or(default, |d| d.0);
        (d.is_zero()).then(|| {
            ConfigError::new(
                &format!("{at}.{key}"),
                "must be longer than 0".to_owned(),
                "write a duration such as `30s` or `10m`",
            )
        })
    };
    errors.extend(positive(
        up.idle_timeout.as_ref(),
        "idle_timeout",
        DEFAULT_IDLE_TIMEOUT,
    ));
    errors.extend(positive(
        up.startup_timeout.as_ref(),
        "startup_timeout",
        DEFAULT_STARTUP_TIMEOUT,
    ));
    if errors.len() > before {
        return None;
    }
    Some(StdioCommand {
        program: program?,
        args: command[1..].to_vec(),
        env,
        cwd,
        isolation,
        max_processes: up.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES),
        idle_timeout: up
            .idle_timeout
            .as_ref()
            .map_or(DEFAULT_IDLE_TIMEOUT, |d| d.0),
        startup_timeout: up
            .startup_timeout
            .as_ref()
            .map_or(DEFAULT_STARTUP_TIMEOUT, |d| d.0),
        caller_env: up.caller_env,
    })
}

/// The child's whole environment: the inherited names that are set in the
/// gateway's, then the configured values (which win).
fn child_env(up: &RawUpstream, at: &str, errors: &mut Vec<ConfigError>) -> Vec<(String, String)> {
    let inherited: Vec<&str> = match &up.inherit_env {
        Some(names) => names.iter().map(String::as_str).collect(),
        None => DEFAULT_INHERITED.to_vec(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for (i, name) in inherited.iter().enumerate() {
        if let Err(m) = check_env_name(name) {
            errors.push(ConfigError::new(
                &format!("{at}.inherit_env[{i}]"),
                m,
                "list variable names such as `PATH`",
            ));
        } else if let Ok(value) = std::env::var(name) {
            env.push(((*name).to_owned(), value));
        }
    }
    for (name, value) in &up.env {
        if let Err(m) = check_env_name(name) {
            errors.push(ConfigError::new(
                &format!("{at}.env.{name}"),
                m,
                "use a variable name such as `API_KEY`",
            ));
            continue;
        }
        if value.contains('\0') {
            errors.push(ConfigError::new(
                &format!("{at}.env.{name}"),
                "the value contains a NUL byte".to_owned(),
                "remove it",
            ));
            continue;
        }
        env.retain(|(n, _)| n != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

fn check_env_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not an environment variable name"))
    }
}

/// The program as an absolute path: a name with a `/` is taken as it is
/// (relative to `cwd`), a bare name is searched on the child's `PATH`.
fn find_program(
    program: &str,
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = match cwd {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("`{}` is not an executable file", path.display()))
        };
    }
    let path = env
        .iter()
        .find(|(n, _)| n == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_absolute() && is_executable(candidate))
        .ok_or_else(|| format!("`{program}` is not found on the child's PATH (`{path}`)"))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Target};

    /// A config with one upstream made of `lines`, auth on unless `open`.
    fn config(lines: &str, open: bool) -> Result<Config, Vec<ConfigError>> {
        let auth = if open {
            "auth: { disabled: true }"
        } else {
            "auth: { jwt_issuers: [{ issuer: 'https://idp.example', jwks_uri: 'https://idp.example/jwks' }] }"
        };
        Config::from_yaml(&format!(
            "public_url: https://gw.example\n{auth}\nupstreams:\n  - name: files\n    path: /files/mcp\n{lines}"
        ))
        .map_err(|e| e.0)
    }

    fn stdio(c: &Config) -> &StdioCommand {
        match &c.upstreams[0].target {
            Target::Stdio(s) => s,
            Target::Http(t) => panic!("an HTTP upstream: {t:?}"),
        }
    }

    #[test]
    fn a_relative_program_in_a_relative_cwd_is_found_once_not_twice() {
        // Unit tests run in the crate's root, where `.ci/run` is executable.
        let c = config("    command: [./run]\n    cwd: .ci\n", true).unwrap();
        let spec = stdio(&c);
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert_eq!(spec.cwd.as_deref(), Some(root.join(".ci").as_path()));
        assert_eq!(spec.program, root.join(".ci/./run"));
    }

    fn refused(lines: &str, open: bool) -> Vec<(String, String)> {
        config(lines, open)
            .expect_err("refused")
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    #[test]
    fn a_command_makes_a_stdio_upstream_with_documented_defaults() {
        let c = config("    command: [sh, -c, 'exit 0']\n", false).unwrap();
        let s = stdio(&c);
        assert!(s.program.is_absolute() && s.program.ends_with("sh"));
        assert_eq!(s.args, ["-c", "exit 0"]);
        assert_eq!(s.isolation, Isolation::PerSession);
        assert_eq!(s.max_processes, 50);
        assert_eq!(s.idle_timeout, Duration::from_secs(600));
        assert_eq!(s.startup_timeout, Duration::from_secs(20));
        assert!(!s.caller_env);
        let names: Vec<&str> = s.env.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.iter().all(|n| DEFAULT_INHERITED.contains(n)),
            "{names:?}"
        );
        assert!(names.contains(&"PATH"));
    }

    #[test]
    fn the_environment_is_only_what_is_listed_and_env_wins() {
        let c = config(
            "    command: [sh]\n    inherit_env: [PATH, NO_SUCH_VARIABLE_HERE]\n    env: { PATH: /bin, KEY: v }\n",
            false,
        )
        .unwrap();
        assert_eq!(
            stdio(&c).env,
            [("KEY".into(), "v".into()), ("PATH".into(), "/bin".into())]
        );
    }

    #[test]
    fn a_program_that_is_missing_or_not_executable_is_refused_by_check_config() {
        let errors = refused("    command: [no-such-program-anywhere]\n", false);
        assert_eq!(errors[0].0, "upstreams[0].command[0]");
        assert!(
            errors[0].1.contains("not found on the child's PATH"),
            "{errors:?}"
        );
        let not_executable = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let errors = refused(&format!("    command: ['{not_executable}']\n"), false);
        assert!(errors[0].1.contains("not an executable file"), "{errors:?}");
        let errors = refused("    command: []\n", false);
        assert_eq!(errors[0].0, "upstreams[0].command");
        let errors = refused("    command: [sh]\n    cwd: /no/such/dir\n", false);
        assert_eq!(errors[0].0, "upstreams[0].cwd");
    }

    #[test]
    fn url_or_command_exactly_one() {
        let both = refused(
            "    url: http://127.0.0.1:1/mcp\n    command: [sh]\n",
            false,
        );
        assert!(both[0].1.contains("both `url` and `command`"), "{both:?}");
        let neither = refused("    policy: {}\n", false);
        assert!(neither[0].1.contains("neither"), "{neither:?}");
    }

    #[test]
    fn settings_of_the_other_kind_are_refused() {
        let errors = refused(
            "    url: http://127.0.0.1:1/mcp\n    isolation: shared\n    max_processes: 3\n",
            false,
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["upstreams[0].isolation", "upstreams[0].max_processes"]
        );
        let errors = refused("    command: [sh]\n    headers: { x-api-key: k }\n", false);
        assert_eq!(errors[0].0, "upstreams[0].headers");
    }

    #[test]
    fn isolation_and_caller_identity_need_callers_that_have_one() {
        let errors = refused("    command: [sh]\n    isolation: per_subject\n", true);
        assert_eq!(errors[0].0, "upstreams[0].isolation");
        let errors = refused(
            "    command: [sh]\n    isolation: shared\n    caller_env: true\n",
            false,
        );
        assert_eq!(errors[0].0, "upstreams[0].caller_env");
        assert!(config("    command: [sh]\n    caller_env: true\n", false).is_ok());
    }

    #[test]
    fn limits_and_names_must_make_sense() {
        let errors = refused(
            "    command: [sh]\n    max_processes: 0\n    idle_timeout: 0s\n    env: { 'BAD-NAME': x }\n",
            false,
        );
        let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
        assert!(paths.contains(&"upstreams[0].max_processes"), "{paths:?}");
        assert!(paths.contains(&"upstreams[0].idle_timeout"), "{paths:?}");
        assert!(paths.contains(&"upstreams[0].env.BAD-NAME"), "{paths:?}");
    }
}
