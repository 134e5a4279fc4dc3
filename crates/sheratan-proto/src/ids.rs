//! Identifier rules shared by servers and clients.

/// The longest node id the contract allows.
pub const NODE_ID_MAX_LEN: usize = 64;

/// Checks a node id against `[A-Za-z0-9._-]{1,64}` and says what is wrong if it does not match.
pub fn validate_node_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("node_id is empty; it must match [A-Za-z0-9._-]{1,64}".to_owned());
    }
    if id.len() > NODE_ID_MAX_LEN {
        return Err(format!(
            "node_id is {} bytes long; at most {NODE_ID_MAX_LEN} are allowed",
            id.len()
        ));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "node_id contains {bad:?}; only letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
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
