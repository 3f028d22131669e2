//! Reading the YAML document into the raw schema, reporting every
//! structural error (unknown key, wrong type, bad duration) in one pass.
//!
//! serde stops at the first error. So after each one the offending entry is
//! taken out of the document and the document read again, until it reads or
//! an error cannot be taken out (a missing required field). Each error keeps
//! its YAML path, and an unknown key gets the closest known key as a hint.

use super::raw::RawConfig;
use super::ConfigError;
use serde_path_to_error::Segment;
use yaml_serde::Value;

/// At most this many structural errors are collected from one file.
const MAX_ERRORS: usize = 50;

const DEFAULT_HINT: &str = "see config.example.yaml for every field and its type";

/// The raw configuration, or every structural error found.
pub(super) fn read_raw(mut doc: Value) -> Result<RawConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    while errors.len() < MAX_ERRORS {
        let e = match serde_path_to_error::deserialize::<_, RawConfig>(doc.clone()) {
            Ok(raw) if errors.is_empty() => return Ok(raw),
            Ok(_) => break,
            Err(e) => e,
        };
        let path = display_path(e.path());
        let message = e.inner().to_string();
        // Taking out a required key with a bad value leaves it missing:
        // that is the same error, already reported.
        if let Some(field) = missing_field(&message) {
            if removed.contains(&join(&path, field)) {
                break;
            }
        }
        errors.push(ConfigError::new(&path, message.clone(), hint(&message)));
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        if missing_field(&message).is_some() || !remove(&mut doc, &segments) {
            break;
        }
        removed.push(path);
    }
    Err(errors)
}

/// `a.b[0].c` for a path (empty for the document itself).
fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        String::new()
    } else {
        text
    }
}

fn join(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// The field a "missing field `x`" error names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Takes the entry at `path` out of the document; `false` when there is no
/// such entry (the error is about the document, or a path serde cannot
/// name).
fn remove(doc: &mut Value, path: &[Segment]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = doc;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(child) => child,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(s)) => match s.get_mut(*index) {
                Some(child) => child,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(s)) if *index < s.len() => {
            // Null keeps the later elements' indexes (and paths) as written.
            s[*index] = Value::Null;
            true
        }
        _ => false,
    }
}

/// "did you mean `x`?" for an unknown key close to a known one.
fn hint(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return DEFAULT_HINT.to_owned();
    };
    let mut parts = rest.split('`');
    let unknown = parts.next().unwrap_or_default();
    let expected: Vec<&str> = parts.skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|known| (edit_distance(unknown, known), *known))
        .min();
    match best {
        Some((distance, known)) if distance <= 2.max(unknown.len() / 3) => {
            format!("did you mean `{known}`?")
        }
        _ if expected.is_empty() => "remove it: this section takes no fields".to_owned(),
        _ => format!("remove it, or use one of: {}", expected.join(", ")),
    }
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("lisen", "listen"), 1);
        assert_eq!(edit_distance("upstream", "upstreams"), 1);
        assert_eq!(edit_distance("tiemouts", "timeouts"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn an_unknown_key_close_to_a_known_one_gets_did_you_mean() {
        let message =
            "unknown field `uptreams`, expected one of `public_url`, `listen`, `upstreams`";
        assert_eq!(hint(message), "did you mean `upstreams`?");
        let far = "unknown field `zzzzzz`, expected `name` or `path`";
        assert_eq!(hint(far), "remove it, or use one of: name, path");
    }
}
