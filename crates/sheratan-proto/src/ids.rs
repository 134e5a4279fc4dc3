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

/// The fewest characters of a job id an operator may type instead of the whole id.
pub const JOB_ID_FRAGMENT_MIN: usize = 8;

/// A job named by its whole id or by a piece of it an operator typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRef {
    Id(uuid::Uuid),
    /// 8 to 35 characters of the text form (lowercase hex, hyphens where the form has them):
    /// the start or the end of one id.
    Fragment(String),
}

/// Parses a job id as the routes that name one job accept it: the whole UUID, or a prefix or
/// suffix of its text form of at least 8 characters (the end of a UUIDv7 is its random part,
/// so 8 characters of it name one job among millions; its start is a timestamp).
pub fn parse_job_ref(field: &str, text: &str) -> Result<JobRef, String> {
    if text.len() == 36 {
        return parse_uuid(field, text).map(JobRef::Id);
    }
    // A piece of the text form: hex digits, with hyphens exactly where the 8-4-4-4-12 form
    // has them, counted from the start (a prefix) or from the end (a suffix).
    let shaped = |offset: usize| {
        text.bytes().enumerate().all(|(i, b)| {
            let hyphen = matches!(i + offset, 8 | 13 | 18 | 23);
            if hyphen {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
    };
    let ok =
        (JOB_ID_FRAGMENT_MIN..36).contains(&text.len()) && (shaped(0) || shaped(36 - text.len()));
    if !ok {
        return Err(format!(
            "{field} {text:?} is neither a UUID (8-4-4-4-12 hex digits) nor the start or end of one \
             ({JOB_ID_FRAGMENT_MIN} to 35 of its characters, hyphens included)"
        ));
    }
    Ok(JobRef::Fragment(text.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs_are_whole_ids_or_fragments_of_eight_or_more() {
        let id = "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert_eq!(
            parse_job_ref("job id", id),
            Ok(JobRef::Id(id.parse().unwrap()))
        );
        assert_eq!(
            parse_job_ref("job id", "2E3F4A5B"),
            Ok(JobRef::Fragment("2e3f4a5b".into()))
        );
        assert_eq!(
            parse_job_ref("job id", "0193a1b2-c3"),
            Ok(JobRef::Fragment("0193a1b2-c3".into()))
        );
        assert_eq!(
            parse_job_ref("job id", "8a9b-0c1d2e3f4a5b"),
            Ok(JobRef::Fragment("8a9b-0c1d2e3f4a5b".into()))
        );
        let unhyphenated = id.replace('-', "");
        for bad in [
            "",
            "2e3f4a5",
            "2e3f4a5g",
            "../../admin",
            "2e3f%4a5b",
            "2e3f_4a5b",
            "--------",
            "0193a1b2c3d4e",
            "0193-a1b2c3",
            &unhyphenated,
            &format!("{id}0"),
        ] {
            let err = parse_job_ref("job id", bad).unwrap_err();
            assert!(
                err.contains("neither a UUID") || err.contains("not a UUID"),
                "{bad}: {err}"
            );
        }
    }

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
