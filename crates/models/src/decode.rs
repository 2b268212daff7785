//! Decoding request bodies by Go's `encoding/json` rules, which Docker's clients rely on:
//! a struct's field matches a key exactly or, failing that, case-insensitively (docker-py sends
//! `detachKeys` in an exec create); `null` is the same as an absent key; unknown keys are left to
//! the model (ignored, or kept where it keeps them).
//!
//! The body is parsed once into a `serde_json::Value`, then deserialized through [`Go`], which
//! renames an object's keys to the struct's field names before serde sees them. serde hands a
//! deserializer the field names only for plain structs: inside `#[serde(flatten)]` and untagged
//! enums the keys are matched as serde matches them (exactly).

use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// Parse `bytes` as JSON and decode a `T` from it by Go's rules.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let v: Value = serde_json::from_slice(bytes)?;
    T::deserialize(Go(v))
}

/// A JSON value being decoded by Go's rules.
pub struct Go(pub Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for Go {
    type Deserializer = Go;
    fn into_deserializer(self) -> Go {
        self
    }
}

/// `obj`'s keys as `fields` spells them (an exact match first, then a case-insensitive one; the
/// last of several keys for one field wins, as in Go), without null values and without the keys
/// no field takes (serde would skip them anyway; kept, a body of many unknown keys would cost
/// time in their square here).
fn canonical(obj: Map<String, Value>, fields: &[&'static str]) -> Vec<(&'static str, Go)> {
    let mut out: Vec<(&'static str, Go)> = Vec::with_capacity(fields.len().min(obj.len()));
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        let Some(name) = fields.iter().find(|f| **f == k).or_else(|| fields.iter().find(|f| f.eq_ignore_ascii_case(&k))) else {
            continue;
        };
        out.retain(|(n, _)| n != name);
        out.push((name, Go(v)));
    }
    out
}

impl<'de> de::Deserializer<'de> for Go {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(a) => visitor.visit_seq(SeqDeserializer::new(a.into_iter().map(Go))),
            Value::Object(o) => visitor.visit_map(MapDeserializer::new(o.into_iter().map(|(k, v)| (k, Go(v))))),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Go(v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(o) => visitor.visit_map(MapDeserializer::new(canonical(o, fields).into_iter())),
            other => other.deserialize_struct(name, fields, visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containers::{CreateBody, ExecConfig, ExecStartBody, Ulimit};

    #[test]
    fn keys_match_case_insensitively_and_exact_names_win() {
        let e: ExecConfig = from_slice(br#"{"AttachStdout": true, "detachKeys": "ctrl-x", "cmd": ["ls"], "TTY": true}"#).unwrap();
        assert_eq!(e.detach_keys.as_deref(), Some("ctrl-x"), "docker-py's spelling");
        assert_eq!((e.attach_stdout, e.tty, e.cmd), (Some(true), Some(true), Some(vec!["ls".to_string()])));
        let s: ExecStartBody = from_slice(br#"{"detach": false, "tty": true}"#).unwrap();
        assert_eq!((s.detach, s.tty), (Some(false), Some(true)));
        // Several spellings of one field: the last wins, as Go's decoder overwrites.
        let e: ExecConfig = from_slice(br#"{"User": "a", "user": "b"}"#).unwrap();
        assert_eq!(e.user.as_deref(), Some("b"));
    }

    #[test]
    fn null_is_absent_and_unknown_keys_are_ignored() {
        let u: Ulimit = from_slice(br#"{"Name": null, "Soft": 1, "Hard": 2, "Other": 3}"#).unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("", 1, 2));
        let b: CreateBody =
            from_slice(br#"{"Image": "busybox", "Cmd": null, "HostConfig": {"Ulimits": [{"name": "nofile", "soft": 1, "hard": 2}]}}"#)
                .unwrap();
        assert_eq!(b.config.image.as_deref(), Some("busybox"));
        assert!(b.config.cmd.is_none());
        assert_eq!(b.host_config.unwrap().ulimits.unwrap()[0].name, "nofile", "nested structs follow the same rules");
    }

    #[test]
    fn wrong_types_are_still_refused() {
        assert!(from_slice::<ExecConfig>(br#"{"Tty": "yes"}"#).is_err());
        assert!(from_slice::<CreateBody>(br#"{"HostConfig": {"Memory": "lots"}}"#).is_err());
        assert!(from_slice::<CreateBody>(br#"{"Cmd": 5}"#).is_err());
        assert!(from_slice::<ExecConfig>(b"{").is_err());
    }
}
