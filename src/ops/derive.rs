//! `consent-webhooks derive`: the pure core over JSON Lines, for trying rules and checking data.
//!
//! Guarantee: streams. Lines are read in place from the reader's buffer (a line longer than
//! the buffer is gathered in one reused spill buffer), events come out
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
    // Used only for a line that straddles the reader's buffer; other lines are read in place.
    let mut spill = Vec::new();
    let mut number = 0u64;
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            break;
        }
        number += 1;
        if let Some(end) = memchr::memchr(b'\n', buffer) {
            one_line(
                &buffer[..end],
                number,
                &mut summary,
                &mut output,
                &mut errors,
                rules,
            )?;
            input.consume(end + 1);
        } else {
            spill.clear();
            input.read_until(b'\n', &mut spill)?;
            let line = spill.strip_suffix(b"\n").unwrap_or(&spill);
            one_line(line, number, &mut summary, &mut output, &mut errors, rules)?;
        }
    }
    output.flush()?;
    errors.flush()?;
    Ok(summary)
}

fn one_line(
    line: &[u8],
    number: u64,
    summary: &mut Summary,
    output: &mut impl Write,
    errors: &mut impl Write,
    rules: &Rules,
) -> io::Result<()> {
    let record = line.strip_suffix(b"\r").unwrap_or(line);
    if record.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
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
    Ok(())
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
            Summary {
                records: 4,
                webhooks: 2,
                suppressed: 1,
                rejected: 1
            }
        );
        let out = String::from_utf8(out).unwrap();
        let types: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].to_string())
            .collect();
        assert_eq!(types, ["\"user.created\"", "\"user.deleted\""]);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("line 3: rejected (invalid_json): "),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }
}
