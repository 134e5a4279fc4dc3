//! A JSON key no request may carry.
//!
//! serde_json, with the `raw_value` feature a dependency of ours turns on, reads an object
//! whose *first* key is [`RESERVED_KEY`] as a raw value. Such an object can be parsed when the
//! key comes later, but the hub prints objects with sorted keys (`$` sorts first), so the same
//! object read back from the store is no longer valid: a job accepted with it would lose its
//! payload (and as a first key with a string value, serde_json silently replaces the object
//! with the string's document). Found by the `canonical_json` fuzz target. Every JSON body is
//! checked for it, at any depth, before it is decoded, and refused with 400 instead.

use serde_json::Value;

pub const RESERVED_KEY: &str = "$serde_json::private::RawValue";

/// Whether the JSON document `bytes` has an object key equal to [`RESERVED_KEY`] at any depth
/// (escapes decoded). Cheap for ordinary bodies: the document is only scanned when its bytes
/// contain the key's tail or a `\u` escape (which could spell it). A document that does not
/// parse answers `false`: the caller's own parse reports it.
pub fn has_reserved_key(bytes: &[u8]) -> bool {
    // One pass over the body (this runs on every submit). A `\u` within the last 7 bytes
    // cannot be part of the 30-character key, so 8-byte windows see every one that matters.
    if !bytes
        .windows(8)
        .any(|w| w == b"RawValue" || w.starts_with(b"\\u"))
    {
        return false;
    }
    serde_json::from_slice::<KeyScan>(bytes).is_ok_and(|scan| scan.0)
}

/// Whether `value` has an object key equal to [`RESERVED_KEY`] at any depth.
pub fn value_has_reserved_key(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if map.contains_key(RESERVED_KEY) {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    false
}

/// Walks a document reading every object key as a plain string. Not `Value`: serde_json's own
/// `Value` treats a first key equal to [`RESERVED_KEY`] specially (it reads the string value as
/// a nested document), so the key would vanish from the tree instead of being found.
struct KeyScan(bool);

impl<'de> serde::Deserialize<'de> for KeyScan {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(KeyScanVisitor)
    }
}

struct KeyScanVisitor;

impl<'de> serde::de::Visitor<'de> for KeyScanVisitor {
    type Value = KeyScan;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<KeyScan, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            found |= key == RESERVED_KEY;
            found |= map.next_value::<KeyScan>()?.0;
        }
        Ok(KeyScan(found))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeyScan, A::Error> {
        let mut found = false;
        while let Some(item) = seq.next_element::<KeyScan>()? {
            found |= item.0;
        }
        Ok(KeyScan(found))
    }

    fn visit_bool<E>(self, _: bool) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
    fn visit_str<E>(self, _: &str) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
    fn visit_unit<E>(self) -> Result<KeyScan, E> {
        Ok(KeyScan(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_found_at_any_depth_and_in_any_spelling() {
        assert!(has_reserved_key(
            br#"{"kind":"echo","payload":{"n":1,"$serde_json::private::RawValue":18}}"#
        ));
        assert!(has_reserved_key(
            br#"{"payload":[{"a":{"$serde_json::private::RawValue":"x"}}]}"#
        ));
        // `$` escaped.
        assert!(has_reserved_key(
            br#"{"payload":{"n":1,"\u0024serde_json::private::RawValue":1}}"#
        ));
        // First in its object with a string value: serde_json's `Value` would read the string
        // as a nested document and drop the key.
        assert!(has_reserved_key(
            br#"{"payload":{"$serde_json::private::RawValue":"{\"n\":1}"}}"#
        ));
        assert!(has_reserved_key(
            br#"{"payload":{"\u0024serde_json::private::RawValue":5}}"#
        ));
    }

    #[test]
    fn ordinary_bodies_pass() {
        assert!(!has_reserved_key(br#"{"kind":"echo","payload":{"n":1}}"#));
        assert!(!has_reserved_key(br#"{"text":"caf\u00e9","RawValue":1}"#));
        assert!(!has_reserved_key(
            br#"{"v":"$serde_json::private::RawValue"}"#
        ));
    }
}
