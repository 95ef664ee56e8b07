//! `consent-webhooks derive`: the pure core over JSON Lines, for trying rules and checking data.
//!
//! Guarantee: streams. One line is held at a time (the line buffer is reused), events come out
//! in input order, each rejected line is reported on the error stream with its line number and
//! reason, and processing goes on. Blank lines carry no record and are skipped.

use std::io::{self, BufRead, Write};

use crate::derive::{derive_record, Derived, Rules};

/// What one run saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub webhooks: u64,
    pub suppressed: u64,
    pub rejected: u64,
}

/// Reads records from `input`, writes one webhook event per line to `output` and one message per
/// rejected line to `errors`.
pub fn run(
    mut input: impl BufRead,
    mut output: impl Write,
    mut errors: impl Write,
    rules: &Rules,
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(4096);
    let mut number = 0u64;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let record = trim_line_end(&line);
        if record.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.records += 1;
        match derive_record(record, rules) {
            Ok(Derived::Webhook(event)) => {
                summary.webhooks += 1;
                output.write_all(&event.body)?;
                output.write_all(b"\n")?;
            }
            Ok(Derived::Suppressed(_)) => summary.suppressed += 1,
            Err(rejection) => {
                summary.rejected += 1;
                writeln!(
                    errors,
                    "line {number}: rejected ({}): {rejection}",
                    rejection.code()
                )?;
            }
        }
    }
    output.flush()?;
    errors.flush()?;
    Ok(summary)
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_in_order_and_reports_rejections_by_line() {
        let input = concat!(
            r#"{"id":"1","organization_id":"o","occurred_at":"2020-01-01T00:00:00Z","entity_type":"user","action":"created","after":{"id":"u"}}"#,
            "\n\nnot json\r\n",
            r#"{"id":"2","organization_id":"o","occurred_at":"2020-01-01T00:00:00Z","entity_type":"user","action":"deleted","before":{"id":"u"}}"#,
            "\n",
            r#"{"id":"3","organization_id":"o","occurred_at":"2020-01-01T00:00:00Z","entity_type":"user","action":"deleted","before":{"id":"u"},"disable_integrations":true}"#,
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = run(input.as_bytes(), &mut out, &mut err, &Rules::default()).unwrap();
        assert_eq!(
            summary,
            Summary { records: 4, webhooks: 2, suppressed: 1, rejected: 1 }
        );
        let out = String::from_utf8(out).unwrap();
        let types: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, ["\"user.created\"", "\"user.deleted\""]);
        let err = String::from_utf8(err).unwrap();
        assert!(err.starts_with("line 3: rejected (invalid_json): "), "{err}");
        assert_eq!(err.lines().count(), 1);
    }
}
