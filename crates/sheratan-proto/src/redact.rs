//! What may be shown of a secret-bearing string. Every banner, `/health` body, overview and
//! diagnostics file that names a URL shows it through [`url`], so a password in
//! `https://user:password@host/` never leaves the process that was given it.

/// The URL with any user-info (`user:password@`, or a bare token `secret@`) replaced by
/// `***@`. Text that is not a URL comes back unchanged.
pub fn url(text: &str) -> String {
    urls_in(text)
}

/// `text` with the user-info of every URL in it replaced by `***` (for whole files: logs,
/// registry snapshots, configuration dumps).
pub fn urls_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '\\' | '`')
                    || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_info_is_hidden_and_the_rest_kept() {
        assert_eq!(
            super::url("https://bob:s3cret@api.example.com/v1?x=1"),
            "https://***@api.example.com/v1?x=1"
        );
        assert_eq!(
            super::url("http://token@10.0.0.1:8000"),
            "http://***@10.0.0.1:8000"
        );
        assert_eq!(
            super::url("http://a:b@c@host/path@x"),
            "http://***@host/path@x"
        );
        assert_eq!(
            super::url("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(super::url("not a url"), "not a url");
    }

    #[test]
    fn every_url_in_a_text_loses_its_user_info() {
        let text = r#"{"addr":"http://node:pw1@10.0.0.5:8081","db":"postgres://app:s3cr3t@db/x", "plain":"http://h/p@q"} see https://tok@example.com/a"#;
        assert_eq!(
            super::urls_in(text),
            r#"{"addr":"http://***@10.0.0.5:8081","db":"postgres://***@db/x", "plain":"http://h/p@q"} see https://***@example.com/a"#
        );
    }
}
