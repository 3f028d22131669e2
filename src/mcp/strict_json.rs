//! A JSON reader that refuses documents two parsers could read differently.
//!
//! serde_json keeps the last of two duplicate keys; other JSON parsers keep the
//! first. If the gateway decided on one reading and the upstream executed the
//! other, a policy check on `params.name` could be bypassed, so an object with
//! a repeated key anywhere in the document is an error. serde_json already
//! refuses invalid UTF-8, lone surrogates, trailing data and nesting deeper
//! than 128 levels.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrictJsonError {
    /// Not JSON at all (syntax, encoding, truncation).
    Syntax(String),
    /// Valid JSON with a key repeated inside one object.
    DuplicateKey(String),
}

/// Parses `bytes` as one JSON document, refusing duplicate object keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictValue
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            let text = e.to_string();
            match text.strip_prefix(DUPLICATE_PREFIX) {
                Some(rest) if e.is_data() => StrictJsonError::DuplicateKey(
                    rest.split(" at line").next().unwrap_or(rest).to_owned(),
                ),
                _ => StrictJsonError::Syntax(text),
            }
        })?;
    Ok(value)
}

const DUPLICATE_PREFIX: &str = "duplicate key ";

/// Seed that builds a [`Value`] while checking keys.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE_PREFIX}`{key}`")));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_json() {
        let v = parse_strict(br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}]}"#).unwrap();
        assert_eq!(v["a"][6]["b"], serde_json::json!({}));
    }

    #[test]
    fn duplicate_key_at_top_level_is_refused() {
        let err = parse_strict(br#"{"method":"a","method":"b"}"#).unwrap_err();
        assert_eq!(err, StrictJsonError::DuplicateKey("`method`".into()));
    }

    #[test]
    fn duplicate_key_deep_inside_is_refused() {
        let body = br#"{"params":{"arguments":[{"x":1,"y":2,"x":3}]}}"#;
        assert!(matches!(
            parse_strict(body),
            Err(StrictJsonError::DuplicateKey(_))
        ));
    }

    #[test]
    fn escaped_spelling_of_the_same_key_is_a_duplicate() {
        let body = br#"{"name":"a","n\u0061me":"b"}"#;
        assert!(matches!(
            parse_strict(body),
            Err(StrictJsonError::DuplicateKey(_))
        ));
    }

    #[test]
    fn same_key_in_sibling_objects_is_fine() {
        assert!(parse_strict(br#"[{"id":1},{"id":2}]"#).is_ok());
    }

    #[test]
    fn syntax_errors_trailing_data_and_bad_utf8_are_syntax() {
        for body in [
            &b"{"[..],
            b"{} {}",
            b"\xff\xfe",
            b"{\"a\":\"\\ud800\"}",
            b"",
        ] {
            assert!(
                matches!(parse_strict(body), Err(StrictJsonError::Syntax(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn very_deep_nesting_is_refused_not_a_stack_overflow() {
        let body = "[".repeat(100_000);
        assert!(matches!(
            parse_strict(body.as_bytes()),
            Err(StrictJsonError::Syntax(_))
        ));
    }
}
