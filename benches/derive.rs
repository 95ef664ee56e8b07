//! Throughput of the pure core on one core: `cargo bench --bench derive`.
//!
//! Generates ~1 KB consent-change records in a realistic mix (every rule, user updates compared
//! field by field), then times `ops::derive::run` (parse, validate, derive, serialize, write)
//! over them, to an in-memory sink, on the calling thread. Prints records/s and MB/s.
//!
//! `cargo bench --bench derive -- --generate N > file.jsonl` writes N records instead, for
//! measuring the binary on a large file (see README: constant memory on 1 GB).

use std::hint::black_box;
use std::io::Write;
use std::time::{Duration, Instant};

use consent_webhooks::derive::Rules;
use consent_webhooks::ops::derive::run;

// The same allocator as the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--generate") {
        let n: usize = args
            .get(pos + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(1_000_000);
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for i in 0..n {
            writeln!(out, "{}", record(i)).unwrap();
        }
        return;
    }

    let n = 60_000;
    let mut input = Vec::new();
    for i in 0..n {
        input.extend_from_slice(record(i).as_bytes());
        input.push(b'\n');
    }
    let rules = Rules::default();
    let mut out = Vec::with_capacity(input.len() * 2);
    // Warm up, then take the best of several runs (least disturbed by the rest of the machine).
    let summary = run(&input[..], &mut out, std::io::sink(), &rules).unwrap();
    assert_eq!(summary.rejected, 0);
    let mut best = Duration::MAX;
    for _ in 0..7 {
        out.clear();
        let start = Instant::now();
        black_box(run(&input[..], &mut out, std::io::sink(), &rules).unwrap());
        best = best.min(start.elapsed());
    }
    let secs = best.as_secs_f64();
    println!(
        "derive: {n} records, {:.0} bytes/record average, {} webhooks + {} suppressed",
        input.len() as f64 / n as f64,
        summary.webhooks,
        summary.suppressed
    );
    println!(
        "derive: {:.0} records/s, {:.1} MB/s input, one core (best of 7)",
        n as f64 / secs,
        input.len() as f64 / secs / 1e6
    );
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
