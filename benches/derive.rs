//! Throughput of the pure core on one core: `cargo bench --bench derive`.
//!
//! Generates ~1 KB consent-change records in a realistic mix (every rule, user updates compared
//! field by field), then times `ops::derive::run` (parse, validate, derive, serialize, write)
//! over them, to an in-memory sink, on the calling thread. Prints records/s and MB/s.
//!
//! A second mix stresses the comparison: user updates whose purposes, vendors and channels
//! arrays must all be compared (string arrays and id-keyed arrays reordered, which is no
//! effective change, and half of them with one real change at the end), and pending → confirmed
//! event updates. Both mixes are reported.
//!
//! `cargo bench --bench derive -- --generate N [--stress] > file.jsonl` writes N records instead,
//! for measuring the binary on a large file (see README: constant memory on 1 GB).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use consent_webhooks::derive::Rules;
use consent_webhooks::ops::derive::run;

// The same allocator as the binary.
#[global_allocator]
static GLOBAL: consent_webhooks::allocator::Mimalloc = consent_webhooks::allocator::Mimalloc;

fn record(i: usize) -> String {
    let org = format!("org-{:02}", i % 64);
    let user = format!("user-{}", i % 5000);
    let padding = "x".repeat(180);
    let purposes = r#"[{"id":"analytics","enabled":true},{"id":"marketing","enabled":false},{"id":"cookies","enabled":true}]"#;
    let user_entity = |version: usize, marketing: bool| {
        format!(
            r#"{{"id":"{user}","organization_id":"{org}","organization_user_id":"{user}@example.com","version":{version},"updated_at":"2026-11-27T09:00:0{}Z","last_seen_country":"FR","consents":{{"purposes":[{{"id":"analytics","enabled":true}},{{"id":"marketing","enabled":{marketing}}}],"vendors":{{"enabled":["google","criteo","amazon"],"disabled":[]}}}},"metadata":{{"note":"{padding}"}}}}"#,
            version % 10
        )
    };
    let event_entity = |status: &str| {
        format!(
            r#"{{"id":"evt-{i}","organization_id":"{org}","status":"{status}","user":{{"id":"{user}","organization_user_id":"{user}@example.com"}},"consents":{{"purposes":{purposes},"vendors":{{"enabled":["google"],"disabled":["criteo"]}}}},"metadata":{{"note":"{padding}"}}}}"#
        )
    };
    let head = format!(
        r#""id":"chg-{i}","organization_id":"{org}","occurred_at":"2026-11-27T09:00:00.123Z""#
    );
    match i % 6 {
        0 => format!(
            r#"{{{head},"entity_type":"event","action":"created","after":{}}}"#,
            event_entity("confirmed")
        ),
        1 => format!(
            r#"{{{head},"entity_type":"event","action":"updated","before":{},"after":{}}}"#,
            event_entity("pending_approval"),
            event_entity("confirmed")
        ),
        2 => format!(
            r#"{{{head},"entity_type":"user","action":"updated","before":{},"after":{},"source":{}}}"#,
            user_entity(1, false),
            user_entity(2, true),
            event_entity("confirmed")
        ),
        3 => format!(
            r#"{{{head},"entity_type":"user","action":"updated","before":{},"after":{}}}"#,
            user_entity(1, false),
            user_entity(2, false)
        ),
        4 => format!(
            r#"{{{head},"entity_type":"user","action":"created","after":{}}}"#,
            user_entity(1, false)
        ),
        _ => format!(
            r#"{{{head},"entity_type":"user","action":"deleted","before":{}}}"#,
            user_entity(3, true)
        ),
    }
}

/// The stressing mix: see the module docs.
fn stress_record(i: usize) -> String {
    let org = format!("org-{:02}", i % 64);
    let user = format!("user-{}", i % 5000);
    let head = format!(
        r#""id":"chg-s{i}","organization_id":"{org}","occurred_at":"2026-11-27T09:00:00.123Z""#
    );
    // Reordered on the other side: not an effective change.
    let purposes = |reversed: bool, last: bool| {
        let mut items: Vec<String> = ["analytics", "marketing", "cookies", "ads", "social"]
            .iter()
            .enumerate()
            .map(|(k, id)| {
                format!(
                    r#"{{"id":"{id}","enabled":{},"legal_basis":"consent"}}"#,
                    k % 2 == 0
                )
            })
            .collect();
        if reversed {
            items.reverse();
        }
        if last {
            items.push(r#"{"id":"personalisation","enabled":true,"legal_basis":"consent"}"#.into());
        }
        format!("[{}]", items.join(","))
    };
    let strings = |items: &[&str], reversed: bool| {
        let mut items: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
        if reversed {
            items.reverse();
        }
        format!("[{}]", items.join(","))
    };
    let channels = |reversed: bool| {
        let mut items: Vec<String> = ["email", "sms", "push", "phone"]
            .iter()
            .map(|id| {
                format!(r#"{{"id":"{id}","enabled":true,"verified_at":"2026-01-01T00:00:00Z"}}"#)
            })
            .collect();
        if reversed {
            items.reverse();
        }
        format!("[{}]", items.join(","))
    };
    let user_entity = |version: usize, after: bool, effective: bool| {
        let vendors = ["google", "criteo", "amazon", "meta", "tiktok", "xandr"];
        let disabled = ["adform", "taboola"];
        format!(
            r#"{{"id":"{user}","organization_id":"{org}","version":{version},"updated_at":"2026-11-27T09:00:0{version}Z","last_seen_country":"FR","consents":{{"purposes":{},"vendors":{{"enabled":{},"disabled":{}}},"channels":{}}}}}"#,
            purposes(after, after && effective),
            strings(&vendors, after),
            strings(&disabled, after),
            channels(after)
        )
    };
    let event_entity = |status: &str| {
        format!(
            r#"{{"id":"evt-s{i}","organization_id":"{org}","status":"{status}","user":{{"id":"{user}"}},"consents":{{"purposes":{},"vendors":{{"enabled":{},"disabled":[]}}}}}}"#,
            purposes(false, false),
            strings(&["google", "criteo"], false)
        )
    };
    match i % 10 {
        0..=3 => format!(
            r#"{{{head},"entity_type":"user","action":"updated","before":{},"after":{}}}"#,
            user_entity(1, false, false),
            user_entity(2, true, i % 2 == 0)
        ),
        4..=6 => format!(
            r#"{{{head},"entity_type":"event","action":"updated","before":{},"after":{}}}"#,
            event_entity("pending_approval"),
            event_entity("confirmed")
        ),
        7 | 8 => format!(
            r#"{{{head},"entity_type":"user","action":"updated","before":{},"after":{},"source":{}}}"#,
            user_entity(3, false, false),
            user_entity(4, true, true),
            event_entity("confirmed")
        ),
        _ => format!(
            r#"{{{head},"entity_type":"event","action":"created","after":{}}}"#,
            event_entity("confirmed")
        ),
    }
}

/// Times `derive` over `n` records of a mix: best of 7 runs, after a warm-up.
fn measure(name: &str, n: usize, mix: fn(usize) -> String, rules: &Rules) {
    let mut input = Vec::new();
    for i in 0..n {
        input.extend_from_slice(mix(i).as_bytes());
        input.push(b'\n');
    }
    let mut out = Vec::with_capacity(input.len() * 2);
    let summary = run(&input[..], &mut out, std::io::sink(), rules).unwrap();
    assert_eq!(summary.rejected, 0, "{name}: every record is valid");
    let mut best = Duration::MAX;
    for _ in 0..7 {
        out.clear();
        let start = Instant::now();
        black_box(run(&input[..], &mut out, std::io::sink(), rules).unwrap());
        best = best.min(start.elapsed());
    }
    let secs = best.as_secs_f64();
    println!(
        "derive ({name}): {n} records, {:.0} bytes/record average, {} webhooks + {} suppressed",
        input.len() as f64 / n as f64,
        summary.webhooks,
        summary.suppressed
    );
    println!(
        "derive ({name}): {:.0} records/s, {:.1} MB/s input, one core (best of 7)",
        n as f64 / secs,
        input.len() as f64 / secs / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--generate") {
        let n: usize = args
            .get(pos + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let mix: fn(usize) -> String = if args.iter().any(|a| a == "--stress") {
            stress_record
        } else {
            record
        };
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for i in 0..n {
            writeln!(out, "{}", mix(i)).unwrap();
        }
        return;
    }

    let n = 60_000;
    let rules = Rules::default();
    measure("realistic mix", n, record, &rules);
    measure("comparison-stressing mix", n, stress_record, &rules);
    let mut out = Vec::new();
    if args.iter().any(|a| a == "--by-kind") {
        let kinds = [
            "event.created",
            "event.updated",
            "user.updated (effective)",
            "user.updated (not effective)",
            "user.created",
            "user.deleted",
        ];
        for (k, name) in kinds.iter().enumerate() {
            let mut input = Vec::new();
            for i in (k..n).step_by(6) {
                input.extend_from_slice(record(i).as_bytes());
                input.push(b'\n');
            }
            let count = n / 6;
            let start = Instant::now();
            for _ in 0..3 {
                out.clear();
                black_box(run(&input[..], &mut out, std::io::sink(), &rules).unwrap());
            }
            println!(
                "  {name}: {:.0} records/s",
                3.0 * count as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
}
