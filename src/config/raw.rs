//! The YAML schema exactly as operators write it (serde, unknown fields are
//! errors). `validate` turns it into the typed [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Top level of the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub public_url: String,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub upstreams: Vec<RawUpstream>,
    #[serde(default)]
    pub logging: RawLogging,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// Process-level settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawServer {
    pub worker_threads: usize,
    pub shutdown_grace_period: HumanDuration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            worker_threads: 2,
            shutdown_grace_period: HumanDuration(Duration::from_secs(30)),
        }
    }
}

/// Request limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub max_body_bytes: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// One upstream MCP server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub name: String,
    pub path: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub timeouts: RawTimeouts,
}

/// Per-upstream timeouts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTimeouts {
    pub connect: HumanDuration,
    pub response: HumanDuration,
    pub idle: Option<HumanDuration>,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        Self {
            connect: HumanDuration(Duration::from_secs(5)),
            response: HumanDuration(Duration::from_secs(120)),
            idle: None,
        }
    }
}

/// Log output settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLogging {
    pub format: super::LogFormat,
    pub level: String,
}

impl Default for RawLogging {
    fn default() -> Self {
        Self {
            format: super::LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// A duration written as `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Seconds(u64),
            Text(String),
        }
        match Form::deserialize(de)? {
            Form::Seconds(s) => Ok(Self(Duration::from_secs(s))),
            Form::Text(t) => parse_duration(&t)
                .map(Self)
                .map_err(serde::de::Error::custom),
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("`{text}` is not a duration; write e.g. `250ms`, `5s`, `2m` or `1h`")
    })?;
    let per_unit_ms = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; use ms, s, m or h"
            ))
        }
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_accept_the_documented_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    }

    #[test]
    fn durations_refuse_unknown_units_and_junk() {
        assert!(parse_duration("5 days").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
