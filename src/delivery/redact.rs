//! What of a URL or an error may reach a log line.
//!
//! Guarantee: [`url`], [`chain`] and [`text`] never return user info (`user:password@`), a query
//! string or a fragment of any `http`/`https` URL they are given or find in an error's text:
//! those are where API keys and signed tokens hide. Scheme, host, port and path stay, so that
//! an operator can still tell which endpoint failed.

use std::error::Error as StdError;

use reqwest::Url;

/// The URL without user info, query or fragment.
pub fn url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// An error and its causes, `: `-separated, with every URL in them redacted.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own message.
        if !out.contains(&cause_text) {
            out.push_str(": ");
            out.push_str(&cause_text);
        }
        source = cause.source();
    }
    text(&out)
}

/// `s` with the user info, query and fragment of every `http://` or `https://` URL removed. A
/// URL runs to the next whitespace; one that does not parse is replaced by `[url]`.
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = find_scheme(rest) {
        out.push_str(&rest[..start]);
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| c.is_whitespace())
            .unwrap_or(candidate.len());
        let raw = &candidate[..end];
        // A closing bracket or quote right after a URL belongs to the sentence, not the URL.
        let trimmed = raw.trim_end_matches([')', ']', '>', '"', '\'', ',', ';', ':', '.']);
        match Url::parse(trimmed) {
            Ok(parsed) => {
                let public = url(&parsed);
                // `Url` adds a `/` to an empty path; keep the text as it was written otherwise.
                out.push_str(&public);
                out.push_str(&raw[trimmed.len()..]);
            }
            Err(_) => out.push_str("[url]"),
        }
        rest = &candidate[end..];
    }
    out.push_str(rest);
    out
}

fn find_scheme(s: &str) -> Option<usize> {
    let lower = s.to_ascii_lowercase();
    match (lower.find("http://"), lower.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRETS: [&str; 4] = ["hunter2", "alice", "sig=abc123", "frag-secret"];

    fn assert_clean(shown: &str) {
        for secret in SECRETS {
            assert!(!shown.contains(secret), "{secret:?} leaked in {shown:?}");
        }
    }

    #[test]
    fn urls_lose_user_info_query_and_fragment() {
        let rows = [
            (
                "https://alice:hunter2@hooks.example.com:8443/in/acme?sig=abc123#frag-secret",
                "https://hooks.example.com:8443/in/acme",
            ),
            ("http://hooks.example.com", "http://hooks.example.com/"),
            (
                "https://auth.example.com/oauth/token?api_key=hunter2",
                "https://auth.example.com/oauth/token",
            ),
        ];
        for (raw, expected) in rows {
            let parsed: Url = raw.parse().expect("url");
            assert_eq!(url(&parsed), expected);
            assert_clean(&url(&parsed));
        }
    }

    #[test]
    fn urls_inside_text_are_redacted_and_the_rest_kept() {
        let shown = text(
            "error sending request for url (https://alice:hunter2@h.example/p?sig=abc123): \
             connection closed; retry HTTPS://H.example/x?sig=abc123, then http://[bad?sig=abc123",
        );
        assert_eq!(
            shown,
            "error sending request for url (https://h.example/p): connection closed; retry \
             https://h.example/x, then [url]"
        );
        assert_clean(&shown);
        assert_eq!(text("no url here"), "no url here");
    }

    /// Issue 7 point 8: a real reqwest error (connection refused) to a URL carrying secrets
    /// in user info and query string is logged without them.
    #[tokio::test]
    async fn a_reqwest_error_is_shown_without_its_url_secrets() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let target = format!("http://alice:hunter2@127.0.0.1:{port}/hook?sig=abc123#frag-secret");
        let err = reqwest::Client::new()
            .post(&target)
            .send()
            .await
            .expect_err("nothing listens there");
        assert!(
            err.to_string().contains("sig=abc123"),
            "reqwest's own text carries the query (the reason for this module): {err}"
        );
        // As the OAuth client's errors are shown (`TransportError`): without reqwest's URL.
        let shown = chain(&err.without_url());
        assert_clean(&shown);
        assert!(shown.contains("error sending request"), "{shown}");
    }
}
