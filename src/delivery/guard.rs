//! The address guard (DESIGN "Security"): webhook and token requests reach only public
//! addresses over HTTPS, unless an organization is explicitly allowed otherwise.
//!
//! Guarantee: with the guarded client, no TCP connection is opened to a non-global address.
//! Host names are filtered where they are resolved ([`GuardedResolver`], plugged into both pooled
//! clients, webhooks' ([`super::http`]) and token requests' (reqwest), so keep-alive connections
//! survive and every new connection is checked);
//! IP-literal URLs never reach a resolver, so [`check_url`] must run before each request. The
//! clients are built without proxies, so the addresses checked are the ones connected to.
//!
//! IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo)
//! are judged by the embedded address, so `::ffff:127.0.0.1` is loopback.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use super::attempt::AttemptError;

/// Why the guard stopped a request.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("scheme {0:?} is not allowed: use https (plain http only with allow_http)")]
    Scheme(String),
    #[error("URL has no host")]
    NoHost,
    #[error("address {0} is not public (loopback, private, link-local, reserved, ...); allowed only with allow_private_addresses")]
    Refused(IpAddr),
    #[error("host {host} resolves only to non-public addresses")]
    NoPublicAddress { host: String },
    #[error("host {host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot resolve host {host}: {source}")]
    Lookup {
        host: String,
        #[source]
        source: io::Error,
    },
}

impl GuardError {
    /// Refusals are permanent (a configuration matter); resolution failures are DNS errors.
    pub fn attempt_error(&self) -> AttemptError {
        match self {
            GuardError::Scheme(_)
            | GuardError::NoHost
            | GuardError::Refused(_)
            | GuardError::NoPublicAddress { .. } => AttemptError::AddressRefused,
            GuardError::NoAddress { .. } | GuardError::Lookup { .. } => AttemptError::Dns,
        }
    }
}

/// What an organization's URLs may point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UrlPolicy {
    pub allow_private: bool,
    pub allow_http: bool,
}

impl UrlPolicy {
    /// Public addresses over HTTPS only.
    pub const STRICT: UrlPolicy = UrlPolicy {
        allow_private: false,
        allow_http: false,
    };

    pub fn check(self, url: &Url) -> Result<(), GuardError> {
        check_url(url, self.allow_private, self.allow_http)
    }
}

/// Checks a URL before a request: `https` (or `http` when allowed), and an IP-literal host must
/// be global unless private addresses are allowed. Host names are checked at resolution.
pub fn check_url(url: &Url, allow_private: bool, allow_http: bool) -> Result<(), GuardError> {
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        other => return Err(GuardError::Scheme(other.to_owned())),
    }
    let host = url.host_str().ok_or(GuardError::NoHost)?;
    // The URL parser has already normalised IPv4 literals (`127.1`, `0x7f000001`) and
    // bracketed IPv6 ones; whatever does not parse as an IP is a name for the resolver.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    if allow_private || is_global(ip) {
        Ok(())
    } else {
        Err(GuardError::Refused(ip))
    }
}

/// Whether `ip` is a publicly routable unicast address.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// IPv4 ranges that are never a webhook endpoint (IANA special-purpose registry and more).
const NON_GLOBAL_V4: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),  // "this network", incl. unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8), // private
    (Ipv4Addr::new(100, 64, 0, 0), 10), // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8), // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16), // link-local, incl. cloud metadata 169.254.169.254
    (Ipv4Addr::new(172, 16, 0, 0), 12), // private
    (Ipv4Addr::new(192, 0, 0, 0), 24), // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24), // documentation TEST-NET-1
    (Ipv4Addr::new(192, 88, 99, 0), 24), // deprecated 6to4 relay anycast
    (Ipv4Addr::new(192, 168, 0, 0), 16), // private
    (Ipv4Addr::new(198, 18, 0, 0), 15), // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation TEST-NET-2
    (Ipv4Addr::new(203, 0, 113, 0), 24), // documentation TEST-NET-3
    (Ipv4Addr::new(224, 0, 0, 0), 4), // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4), // reserved, incl. broadcast 255.255.255.255
];

/// IPv6 ranges refused outright (those embedding IPv4 are handled in [`is_global_v6`]).
const NON_GLOBAL_V6: [(Ipv6Addr, u8); 12] = [
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // NAT64 local use
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48),    // benchmarking
    (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28), // ORCHID (deprecated)
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28), // ORCHIDv2
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation (RFC 9637)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),    // SRv6 SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !NON_GLOBAL_V4
        .iter()
        .any(|&(net, len)| (bits ^ u32::from(net)) >> (32 - u32::from(len)) == 0)
}

fn in_v6(bits: u128, (net, len): (Ipv6Addr, u8)) -> bool {
    (bits ^ u128::from(net)) >> (128 - u32::from(len)) == 0
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let low_v4 = Ipv4Addr::from(bits as u32);
    let [s0, s1, s2, s3, ..] = ip.segments();
    // ::/96 (unspecified, loopback, IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped) and
    // 64:ff9b::/96 (NAT64) carry an IPv4 address in their low 32 bits.
    if bits >> 32 == 0
        || bits >> 32 == 0xffff
        || in_v6(bits, (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96))
    {
        return is_global_v4(low_v4);
    }
    // 6to4 2002::/16: the IPv4 address is in bits 16..48.
    if s0 == 0x2002 {
        return is_global_v4(Ipv4Addr::from((u32::from(s1) << 16) | u32::from(s2)));
    }
    // Teredo 2001:0::/32: server IPv4 in bits 32..64, client IPv4 inverted in the low 32 bits.
    if s0 == 0x2001 && s1 == 0 {
        let server = Ipv4Addr::from((u32::from(s2) << 16) | u32::from(s3));
        let client = Ipv4Addr::from(!(bits as u32));
        return is_global_v4(server) && is_global_v4(client);
    }
    !NON_GLOBAL_V6.iter().any(|&range| in_v6(bits, range))
}

/// The clients' resolver: it resolves with the system resolver (tokio's `lookup_host`) and, when
/// guarding, keeps only global addresses; if none remain it fails with
/// [`GuardError::NoPublicAddress`], which the attempt classifies as `AddressRefused`.
///
/// The permissive client uses it too (with `guard: false`) so that resolution errors are typed
/// the same way for every organization.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    guard: bool,
}

impl GuardedResolver {
    pub fn guarded() -> Self {
        GuardedResolver { guard: true }
    }

    pub fn permissive() -> Self {
        GuardedResolver { guard: false }
    }

    /// Resolves `host` and applies the filter (the port is left 0: reqwest sets it).
    pub async fn lookup(self, host: String) -> Result<Vec<SocketAddr>, GuardError> {
        let looked_up = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map(|addrs| addrs.collect::<Vec<SocketAddr>>());
        let resolved = match looked_up {
            Ok(resolved) => resolved,
            Err(source) => return Err(GuardError::Lookup { host, source }),
        };
        if resolved.is_empty() {
            return Err(GuardError::NoAddress { host });
        }
        let kept: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|addr| !self.guard || is_global(addr.ip()))
            .collect();
        if kept.is_empty() {
            return Err(GuardError::NoPublicAddress { host });
        }
        Ok(kept)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let resolver = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match resolver.lookup(host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

#[cfg(test)]
mod tests;
