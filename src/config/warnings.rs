//! Settings that load but will not work as the operator probably expects: `check-config` prints
//! them on stderr (and still exits 0), `run`, `replay` and `redrive` log them at start.
//!
//! Today: an endpoint or token URL whose host is a literal non-global address (`10.0.0.5`,
//! `[::1]`, `localhost`) without `allow_private_addresses`. The address guard refuses such a
//! connection, so every event of that organization would be dead-lettered (`address_refused`).
//! A warning rather than an error: the guard is the rule; this only says it early.

use std::fmt;
use std::net::IpAddr;

use reqwest::Url;

use super::reader::join;
use super::settings::Settings;
use crate::delivery::is_global;

/// One warning: the key it is about and what will happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every warning about `settings`, in key order.
pub fn warnings(settings: &Settings) -> Vec<ConfigWarning> {
    let mut out = Vec::new();
    for (id, org) in &settings.organizations {
        if org.allow_private_addresses {
            continue;
        }
        let path = join("organizations", id);
        let allow = format!("{path}.allow_private_addresses");
        let mut urls = vec![(format!("{path}.url"), &org.url)];
        if let Some(oauth) = &org.oauth {
            urls.push((format!("{path}.oauth.token_url"), &oauth.token_url));
        }
        for (key, url) in urls {
            if let Some(host) = non_global_host(url) {
                out.push(ConfigWarning {
                    key,
                    message: format!(
                        "the host {host} is not a public address; the address guard refuses it, \
                         so every request fails and every event of this organization is \
                         dead-lettered (address_refused). Use a public host name, or set \
                         {allow} = true (development only)"
                    ),
                });
            }
        }
    }
    out
}

/// The URL's host when it is a literal non-global address or `localhost`. Only the host is
/// returned: the path and query may carry secrets.
fn non_global_host(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let refused = match literal.parse::<IpAddr>() {
        Ok(ip) => !is_global(ip),
        // RFC 6761: `localhost` and its subdomains always resolve to loopback.
        Err(_) => {
            let name = literal.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    refused.then(|| host.to_owned())
}
