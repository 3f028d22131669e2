//! Reading a POST body's JSON-RPC messages in one strict pass, keeping only
//! the fields the gateway decides on: `jsonrpc`, `id`, `method`, whether
//! there is a `result` or an `error`, and the `params` fields that name
//! something (`NAMED_BY`). Everything else (a tool's arguments,
//! `_meta`, results) is checked by the same rules as the rest of the
//! document (duplicate keys at any depth, numbers) but never built: building
//! the whole body as a `serde_json::Value` was the largest cost of the
//! gateway's own work per call (issue 17's profile).
//!
//! The JSON-RPC rules are applied afterwards, by `read_message`, so a body
//! that is not strict JSON is refused as such whatever its fields say.

use super::strict_json::{duplicate, finite, Checked, KeySeed, SeenKeys};
use super::NAMED_BY;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use std::borrow::Cow;
use std::fmt;

/// A body: one message or a batch (a JSON array).
pub(super) enum Body<'de> {
    Single(Item<'de>),
    Batch(Vec<Item<'de>>),
}

/// One element of a body: a JSON object (a message, if its fields say so)
/// or anything else.
pub(super) enum Item<'de> {
    Object(RawMessage<'de>),
    NotObject,
}

/// A field's value, as far as the rules need it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'de> {
    Str(Cow<'de, str>),
    /// An integer (an `id` may be one).
    Int(Number),
    /// Anything else: a float, a bool, null, an object or an array.
    Other,
}

impl Scalar<'_> {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an `id` may be: a string or an integer.
    pub(super) fn as_id(&self) -> Option<Value> {
        match self {
            Self::Str(s) => Some(Value::String(s.clone().into_owned())),
            Self::Int(n) => Some(Value::Number(n.clone())),
            Self::Other => None,
        }
    }
}

/// What `params` was.
#[derive(Debug, Default, PartialEq)]
pub(super) enum Params<'de> {
    #[default]
    Absent,
    /// An object, with the fields that name something.
    Object(Vec<(&'static str, Scalar<'de>)>),
    Array,
    /// A string, number, bool or null.
    Other,
}

impl Params<'_> {
    /// `params.<field>` as a string, when it is one.
    pub(super) fn named(&self, field: &str) -> Option<&str> {
        match self {
            Self::Object(fields) => fields
                .iter()
                .find(|(name, _)| *name == field)
                .and_then(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// The fields of one JSON object read as a message.
#[derive(Debug, Default)]
pub(super) struct RawMessage<'de> {
    pub jsonrpc: Option<Scalar<'de>>,
    pub id: Option<Scalar<'de>>,
    pub method: Option<Scalar<'de>>,
    pub params: Params<'de>,
    pub has_result: bool,
    pub has_error: bool,
}

/// The message fields the rules read.
const MESSAGE_FIELDS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error"];

/// Seed of a whole body.
pub(super) struct BodySeed;

impl<'de> DeserializeSeed<'de> for BodySeed {
    type Value = Body<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Body<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BodySeed {
    type Value = Body<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ItemSeed)? {
            items.push(item);
        }
        Ok(Body::Batch(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body<'de>, A::Error> {
        ItemSeed.visit_map(map).map(Body::Single)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Body<'de>, E> {
        Ok(Body::Single(Item::NotObject))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Body<'de>, E> {
        Ok(Body::Single(Item::NotObject))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Body<'de>, E> {
        Ok(Body::Single(Item::NotObject))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Body<'de>, E> {
        finite(v).map(|_| Body::Single(Item::NotObject))
    }
    fn visit_str<E>(self, _: &str) -> Result<Body<'de>, E> {
        Ok(Body::Single(Item::NotObject))
    }
    fn visit_unit<E>(self) -> Result<Body<'de>, E> {
        Ok(Body::Single(Item::NotObject))
    }
}

/// Seed of one element of a body.
struct ItemSeed;

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = Item<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Item<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Item<'de>, A::Error> {
        let mut message = RawMessage::default();
        let mut keys = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let field = MESSAGE_FIELDS.iter().find(|f| **f == key).copied();
            if let Some(again) = keys.insert(key) {
                return Err(duplicate(&again));
            }
            match field {
                Some("jsonrpc") => message.jsonrpc = Some(map.next_value_seed(ScalarSeed)?),
                Some("id") => message.id = Some(map.next_value_seed(ScalarSeed)?),
                Some("method") => message.method = Some(map.next_value_seed(ScalarSeed)?),
                Some("params") => message.params = map.next_value_seed(ParamsSeed)?,
                other => {
                    message.has_result |= other == Some("result");
                    message.has_error |= other == Some("error");
                    map.next_value_seed(Checked)?;
                }
            }
        }
        Ok(Item::Object(message))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Item<'de>, A::Error> {
        Checked.visit_seq(seq).map(|()| Item::NotObject)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Item<'de>, E> {
        Ok(Item::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Item<'de>, E> {
        Ok(Item::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Item<'de>, E> {
        Ok(Item::NotObject)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Item<'de>, E> {
        finite(v).map(|_| Item::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Item<'de>, E> {
        Ok(Item::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Item<'de>, E> {
        Ok(Item::NotObject)
    }
}

/// Seed of a field the rules look at.
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Scalar<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
        finite(v).map(|_| Scalar::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
        Checked.visit_seq(seq).map(|()| Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
        Checked.visit_map(map).map(|()| Scalar::Other)
    }
}

/// Seed of `params`.
struct ParamsSeed;

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params<'de>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Params<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Params<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON-RPC params")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params<'de>, A::Error> {
        let mut named = Vec::new();
        let mut keys = SeenKeys::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            // The fields a method can be named by (`NAMED_BY`).
            let field = NAMED_BY.iter().map(|(_, f)| *f).find(|f| *f == key);
            if let Some(again) = keys.insert(key) {
                return Err(duplicate(&again));
            }
            match field {
                Some(field) => named.push((field, map.next_value_seed(ScalarSeed)?)),
                None => map.next_value_seed(Checked)?,
            }
        }
        Ok(Params::Object(named))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params<'de>, A::Error> {
        Checked.visit_seq(seq).map(|()| Params::Array)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Params<'de>, E> {
        Ok(Params::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Params<'de>, E> {
        Ok(Params::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Params<'de>, E> {
        Ok(Params::Other)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Params<'de>, E> {
        finite(v).map(|_| Params::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Params<'de>, E> {
        Ok(Params::Other)
    }
    fn visit_unit<E>(self) -> Result<Params<'de>, E> {
        Ok(Params::Other)
    }
}
