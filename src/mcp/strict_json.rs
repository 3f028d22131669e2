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
use std::borrow::Cow;
use std::collections::HashSet;
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
    parse_with(bytes, StrictValue)
}

/// Reads `bytes` as one JSON document with `seed`, which must check what
/// it does not keep with [`Checked`] and the keys of every object it reads
/// with [`SeenKeys`], so that the whole document meets the rules above
/// whatever the seed builds of it.
pub(super) fn parse_with<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    seed.deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| {
            let text = e.to_string();
            match text.strip_prefix(DUPLICATE_PREFIX) {
                Some(rest) if e.is_data() => StrictJsonError::DuplicateKey(
                    rest.split(" at line").next().unwrap_or(rest).to_owned(),
                ),
                _ => StrictJsonError::Syntax(text),
            }
        })
}

const DUPLICATE_PREFIX: &str = "duplicate key ";

/// The error of a key seen twice in one object.
pub(super) fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("{DUPLICATE_PREFIX}`{key}`"))
}

/// `v` as a JSON number, refusing what JSON cannot hold.
pub(super) fn finite<E: de::Error>(v: f64) -> Result<Number, E> {
    Number::from_f64(v).ok_or_else(|| E::custom("number out of range"))
}

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
        finite(v).map(Value::Number)
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
                return Err(duplicate(&key));
            }
            let value = map.next_value_seed(StrictValue)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Seed that checks a value like [`StrictValue`] and keeps nothing of it.
pub(super) struct Checked;

impl<'de> DeserializeSeed<'de> for Checked {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        finite(v).map(drop)
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Checked)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut keys = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if let Some(again) = keys.insert(key) {
                return Err(duplicate(&again));
            }
            map.next_value_seed(Checked)?;
        }
        Ok(())
    }
}

/// The keys of one object so far: a short list while it is small (most
/// are), a hash set once it is not, so a huge object stays linear.
#[derive(Default)]
pub(super) struct SeenKeys<'de> {
    few: Vec<Cow<'de, str>>,
    many: HashSet<Cow<'de, str>>,
}

impl<'de> SeenKeys<'de> {
    const FEW: usize = 16;

    /// Adds `key`, or hands it back when it was there already.
    pub(super) fn insert(&mut self, key: Cow<'de, str>) -> Option<Cow<'de, str>> {
        if self.many.is_empty() && self.few.len() < Self::FEW {
            if self.few.contains(&key) {
                return Some(key);
            }
            self.few.push(key);
            return None;
        }
        if self.many.is_empty() {
            self.many.extend(self.few.drain(..));
        }
        if self.many.contains(&key) {
            return Some(key);
        }
        self.many.insert(key);
        None
    }
}

/// An object key, borrowed from the body unless it had escapes.
pub(super) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v))
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

    #[test]
    fn duplicates_are_found_in_objects_of_any_size() {
        let keys: Vec<String> = (0..5000).map(|i| format!("\"k{i}\":{i}")).collect();
        let unique = format!("{{\"a\":{{{}}}}}", keys.join(","));
        assert!(parse_strict(unique.as_bytes()).is_ok());
        for repeated in ["k3", "k4999", "k20"] {
            let body = format!("{{\"a\":{{{},\"{repeated}\":0}}}}", keys.join(","));
            assert!(
                matches!(
                    parse_strict(body.as_bytes()),
                    Err(StrictJsonError::DuplicateKey(_))
                ),
                "{repeated}"
            );
        }
    }
}
