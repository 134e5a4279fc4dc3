//! What may be shown of a secret-bearing string. Every banner, `/health` body, overview and
//! diagnostics file that names a URL shows it through [`url`], so a password in
//! `https://user:password@host/` never leaves the process that was given it.

/// The URL with any user-info (`user:password@`, or a bare token `secret@`) replaced by
/// `***@`. Text that is not a URL comes back unchanged.
pub fn url(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &text[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    match authority.rfind('@') {
        Some(at) => format!(
            "{}***{}",
            &text[..authority_start],
            &text[authority_start + at..]
        ),
        None => text.to_owned(),
    }
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
}
