//! A JSON key no request may carry.
//!
//! serde_json, with the `raw_value` feature a dependency of ours turns on, reads an object
//! whose *first* key is [`RESERVED_KEY`] as a raw value. Such an object can be parsed when the
//! key comes later, but the hub prints objects with sorted keys (`$` sorts first), so the same
//! object read back from the store is no longer valid: a job accepted with it would lose its
//! payload. Found by the `canonical_json` fuzz target. Every JSON body is checked for it, at
//! any depth, and refused with 400 instead.

use serde_json::Value;

pub const RESERVED_KEY: &str = "$serde_json::private::RawValue";

/// Whether the JSON document `bytes` has an object key equal to [`RESERVED_KEY`] at any depth.
/// Cheap for ordinary bodies: the tree is only walked when the bytes contain the key's tail or
/// a `\u` escape (which could spell it).
pub fn has_reserved_key(bytes: &[u8]) -> bool {
    let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !contains(b"RawValue") && !contains(b"\\u") {
        return false;
    }
    // Parsed without the raw-value trick: a plain tree of maps.
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => value_has_reserved_key(&value),
        // Only reachable when the key comes first; the parse of the body itself fails too.
        Err(_) => contains(RESERVED_KEY.as_bytes()),
    }
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
