//! Identifier rules shared by servers and clients.

/// The longest node id the contract allows.
pub const NODE_ID_MAX_LEN: usize = 64;

/// Checks a node id against `[A-Za-z0-9._-]{1,64}` and says what is wrong if it does not match.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    validate_name("node_id", id, NODE_ID_MAX_LEN)
}

/// Checks `value` against `[A-Za-z0-9._-]{1,max}`; the message names `field`.
pub fn validate_name(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!(
            "{field} is empty; it must match [A-Za-z0-9._-]{{1,{max}}}"
        ));
    }
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes long; at most {max} are allowed",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{field} contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Parses a job or lease id: a UUID in its hyphenated form. Says which field is wrong.
pub fn parse_uuid(field: &str, text: &str) -> Result<uuid::Uuid, String> {
    if text.len() != 36 {
        return Err(format!(
            "{field} {text:?} is not a UUID (8-4-4-4-12 hex digits)"
        ));
    }
    uuid::Uuid::try_parse(text)
        .map_err(|_| format!("{field} {text:?} is not a UUID (8-4-4-4-12 hex digits)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_rules() {
        assert!(validate_node_id("host-a.01_x").is_ok());
        assert!(validate_node_id(&"a".repeat(64)).is_ok());
        assert!(validate_node_id("").is_err());
        assert!(validate_node_id(&"a".repeat(65)).is_err());
        assert!(validate_node_id("a b").is_err());
        assert!(validate_node_id("a/b").is_err());
        assert!(validate_node_id("é").is_err());
        assert!(validate_node_id("a\0").is_err());
    }
}
