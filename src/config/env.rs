//! `${VAR}` expansion in YAML string values.
//!
//! Expansion runs on parsed string scalars, never on the raw file text, so a
//! variable's value can never change the shape of the document (a secret that
//! contains `: ` or a newline stays one string). `$${` writes a literal `${`.

use super::ConfigError;
use yaml_serde::Value;

/// Replaces `${VAR}` in every string of `value`, recording an error (with the
/// YAML path) for each unset or malformed reference.
pub(crate) fn expand_env(value: &mut Value, path: &str, errors: &mut Vec<ConfigError>) {
    match value {
        Value::String(s) => match expand_str(s, |name| std::env::var(name).ok()) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(ConfigError::new(
                path,
                message,
                "export the variable before starting the gateway, or write `$${` for a literal `${`",
            )),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_env(item, &format!("{path}[{i}]"), errors);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().map_or_else(|| format!("{key:?}"), str::to_owned);
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                expand_env(item, &child, errors);
            }
        }
        Value::Tagged(tagged) => expand_env(&mut tagged.value, path, errors),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expands one string with `lookup`; the error says which variable is missing.
fn expand_str(input: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {input:?}"))?;
            let name = &after[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_str;

    fn lookup(name: &str) -> Option<String> {
        (name == "API_KEY").then(|| "s3cr3t: {x}".to_owned())
    }

    #[test]
    fn expands_set_variables_verbatim() {
        assert_eq!(
            expand_str("Bearer ${API_KEY}!", lookup).unwrap(),
            "Bearer s3cr3t: {x}!"
        );
    }

    #[test]
    fn unset_variable_is_named_in_the_error() {
        let err = expand_str("${MISSING_ONE}", lookup).unwrap_err();
        assert!(err.contains("`MISSING_ONE` is not set"), "{err}");
    }

    #[test]
    fn double_dollar_escapes_and_lone_dollar_stays() {
        assert_eq!(
            expand_str("$${API_KEY} costs $5", lookup).unwrap(),
            "${API_KEY} costs $5"
        );
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand_str("${API_KEY", lookup).is_err());
        assert!(expand_str("${}", lookup).is_err());
        assert!(expand_str("${1X}", lookup).is_err());
    }
}
