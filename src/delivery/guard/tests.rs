//! Table tests for every refused range, in IPv4 and IPv6 forms, and the resolver filter.

use super::*;

fn global(s: &str) -> bool {
    is_global(s.parse().expect("test address"))
}

#[test]
fn ipv4_ranges() {
    let refused = [
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.0.1",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
    ];
    for ip in refused {
        assert!(!global(ip), "{ip} must be refused");
    }
    let allowed = [
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.1",
        "192.0.3.1",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "203.0.114.1",
        "223.255.255.255",
    ];
    for ip in allowed {
        assert!(global(ip), "{ip} must be allowed");
    }
}

#[test]
fn ipv6_ranges() {
    let refused = [
        "::",
        "::1",
        "fe80::1",
        "febf::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
        "2001:db8::1",
        "3fff::1",
        "3fff:0fff::1",
        "100::1",
        "2001:2::1",
        "2001:10::1",
        "2001:20::1",
        "5f00::1",
        "64:ff9b:1::1",
    ];
    for ip in refused {
        assert!(!global(ip), "{ip} must be refused");
    }
    let allowed = [
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "4000::1",
        "2001:db9::1",
    ];
    for ip in allowed {
        assert!(global(ip), "{ip} must be allowed");
    }
}

#[test]
fn ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4() {
    let refused = [
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "::192.168.0.1",
        "64:ff9b::127.0.0.1",
        "64:ff9b::a9fe:a9fe",        // 169.254.169.254
        "2002:7f00:1::1",            // 6to4 of 127.0.0.1
        "2002:c0a8:101::",           // 6to4 of 192.168.1.1
        "2001:0:7f00:1::ffff:ffff",  // Teredo, server 127.0.0.1
        "2001:0:808:808::80ff:fffe", // Teredo, client !0x80ff_fffe = 127.0.0.1
    ];
    for ip in refused {
        assert!(!global(ip), "{ip} must be refused");
    }
    let allowed = [
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
        "2001:0:808:808::f7f7:f7f7", // Teredo, server and client 8.8.8.8
    ];
    for ip in allowed {
        assert!(global(ip), "{ip} must be allowed");
    }
}

#[test]
fn check_url_rules() {
    let rows: &[(&str, bool, bool, Option<AttemptError>)] = &[
        ("https://example.com/hook", false, false, None),
        ("https://8.8.8.8/hook", false, false, None),
        ("https://[2606:4700::1]/hook", false, false, None),
        (
            "http://example.com/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        ("http://example.com/hook", false, true, None),
        (
            "ftp://example.com/hook",
            true,
            true,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://127.0.0.1/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://127.1/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://0x7f000001/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://169.254.169.254/latest",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://[::1]/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://[::ffff:7f00:1]/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        (
            "https://[fd00::1]/hook",
            false,
            false,
            Some(AttemptError::AddressRefused),
        ),
        ("https://127.0.0.1/hook", true, false, None),
        ("http://[::1]:8080/hook", true, true, None),
    ];
    for &(url, allow_private, allow_http, expected) in rows {
        let url: Url = url.parse().expect("test URL");
        let got = check_url(&url, allow_private, allow_http).err();
        assert_eq!(got.map(|e| e.attempt_error()), expected, "{url}");
    }
    let policy = UrlPolicy {
        allow_private: false,
        allow_http: true,
    };
    let literal: Url = "http://10.0.0.1/".parse().expect("test URL");
    assert!(matches!(
        policy.check(&literal),
        Err(GuardError::Refused(_))
    ));
}

#[tokio::test]
async fn resolver_filters_non_global_addresses() {
    let refused = GuardedResolver::guarded().lookup("localhost".into()).await;
    assert!(
        matches!(refused, Err(GuardError::NoPublicAddress { ref host }) if host == "localhost"),
        "{refused:?}"
    );
    let allowed = GuardedResolver::permissive()
        .lookup("localhost".into())
        .await
        .expect("localhost resolves");
    assert!(allowed.iter().all(|a| a.ip().is_loopback()));
    let literal = GuardedResolver::guarded().lookup("8.8.8.8".into()).await;
    assert_eq!(
        literal.expect("literal resolves").first().map(|a| a.ip()),
        Some("8.8.8.8".parse().expect("ip"))
    );
    let missing = GuardedResolver::guarded()
        .lookup("no-such-host.invalid".into())
        .await;
    assert!(
        matches!(
            missing.as_ref().map_err(|e| e.attempt_error()),
            Err(AttemptError::Dns)
        ),
        "{missing:?}"
    );
}
