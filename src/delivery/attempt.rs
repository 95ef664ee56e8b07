//! What one delivery attempt produced, as data: a status (with its `Retry-After`) or a typed
//! transport error.
//!
//! Guarantee: every way an attempt can end maps to exactly one [`AttemptOutcome`], and every
//! [`AttemptError`] has a fixed, stable [`code`](AttemptError::code) (dead-letter records and
//! metric labels use it); nothing downstream parses error text. A response is not a
//! success: only the [`RetryPolicy`](super::RetryPolicy) decides, from the status code.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::guard::GuardError;

/// One HTTP attempt (including its OAuth token fetch and the single re-send after a 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// When the attempt started (wall clock, for dead-letter records).
    pub at: DateTime<Utc>,
    /// How long it took, token fetch included.
    pub duration: Duration,
    pub outcome: AttemptOutcome,
    /// The endpoint answered 401 to a cached OAuth token, and the request was re-sent once with
    /// a new one (the outcome is the re-send's).
    pub reauthorized: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The endpoint answered. `retry_after` is its `Retry-After` header, if present and valid,
    /// as a delay from when the response arrived.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No status was received.
    Failed(AttemptError),
}

/// Why an attempt produced no status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptError {
    /// The request (connect, send, or waiting for the status) took longer than allowed.
    Timeout,
    /// TCP connection failed (refused, reset, unreachable).
    Connect,
    /// The host name could not be resolved.
    Dns,
    /// TLS handshake failed (certificate, protocol).
    Tls,
    /// The address guard refused the destination: non-public address, or a scheme not allowed.
    AddressRefused,
    /// No OAuth access token could be obtained.
    OAuthToken,
    /// Sending the request body failed.
    Body,
    /// Anything else about the request or the connection (e.g. connection closed mid-response).
    Request,
}

impl AttemptError {
    /// Stable identifier written into dead-letter records and used as a metric label.
    pub fn code(self) -> &'static str {
        match self {
            AttemptError::Timeout => "timeout",
            AttemptError::Connect => "connect",
            AttemptError::Dns => "dns",
            AttemptError::Tls => "tls",
            AttemptError::AddressRefused => "address_refused",
            AttemptError::OAuthToken => "oauth_token",
            AttemptError::Body => "body",
            AttemptError::Request => "request",
        }
    }

    /// Classifies a reqwest error (OAuth token requests) by its kind and its source chain; a
    /// webhook request's error goes through [`super::http::classify`], by the same rules.
    ///
    /// Order matters: a refusal by our guard resolver is looked for first (it surfaces as a
    /// connect error), then timeouts (a TLS handshake that times out is a timeout), then TLS
    /// (rustls reports handshake failures as `io::ErrorKind::InvalidData` inside a connect
    /// error), then plain connect failures.
    pub fn classify(err: &reqwest::Error) -> AttemptError {
        if let Some(guard) = find_in_chain::<GuardError>(err) {
            return guard.attempt_error();
        }
        if err.is_timeout() {
            return AttemptError::Timeout;
        }
        if err.is_connect() {
            let tls = has_io_kind(err, io::ErrorKind::InvalidData);
            return if tls {
                AttemptError::Tls
            } else {
                AttemptError::Connect
            };
        }
        if err.is_body() {
            return AttemptError::Body;
        }
        AttemptError::Request
    }
}

impl AttemptOutcome {
    /// Low-cardinality metric label: `"1xx"` … `"5xx"`, `"other"` for codes outside 100–599,
    /// `"error"` when no status was received.
    /// The status classes of the metrics, created at zero for every organization; `1xx` and
    /// `other` (never expected from a webhook endpoint) appear only when met.
    pub const CLASSES: [&'static str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

    pub fn status_class(&self) -> &'static str {
        match self {
            AttemptOutcome::Status { code, .. } => match code / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                5 => "5xx",
                _ => "other",
            },
            AttemptOutcome::Failed(_) => "error",
        }
    }

    /// The status code, if one was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            AttemptOutcome::Status { code, .. } => Some(*code),
            AttemptOutcome::Failed(_) => None,
        }
    }

    /// The stable code of this outcome for records: the status as digits, or the error code.
    pub fn code(&self) -> String {
        match self {
            AttemptOutcome::Status { code, .. } => code.to_string(),
            AttemptOutcome::Failed(e) => e.code().to_owned(),
        }
    }
}

/// `err` and its causes. `io::Error::source()` skips the error an `io::Error` wraps (reqwest
/// wraps rustls' `InvalidData` error in an `Other` one), so `get_ref()` is followed too.
fn causes<'a>(err: &'a (dyn StdError + 'static)) -> Vec<&'a (dyn StdError + 'static)> {
    let mut all = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        all.push(e);
        current = match e.downcast_ref::<io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    all
}

/// The first error of type `T` among `err` and its causes.
pub(super) fn find_in_chain<'a, T: StdError + 'static>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a T> {
    causes(err).into_iter().find_map(|e| e.downcast_ref::<T>())
}

/// Whether an `io::Error` of this kind is among `err` and its causes.
pub(super) fn has_io_kind(err: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    causes(err).into_iter().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == kind)
    })
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date in any of
/// the three forms of RFC 9110 §5.6.7 (IMF-fixdate, the obsolete RFC 850 and asctime forms),
/// turned into a delay from `now` (zero if already past). Anything else is `None`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds is "forever"; the policy clamps to its budget anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = parse_http_date(value, now)?;
    Some((date - now).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP-date (RFC 9110 §5.6.7). `now` resolves the two-digit year of the RFC 850 form: a
/// date that would be more than 50 years in the future is read as the most recent past year
/// with those last two digits.
pub fn parse_http_date(value: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    match parts.as_slice() {
        // IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`
        [day, dd, mon, yyyy, time, "GMT"] if is_day_name(day.strip_suffix(',')?, false) => {
            if dd.len() != 2 || yyyy.len() != 4 {
                return None;
            }
            date_time(yyyy.parse().ok()?, mon, dd.parse().ok()?, time)
        }
        // RFC 850: `Sunday, 06-Nov-94 08:49:37 GMT`
        [day, date, time, "GMT"] if is_day_name(day.strip_suffix(',')?, true) => {
            let mut fields = date.split('-');
            let (dd, mon, yy) = (fields.next()?, fields.next()?, fields.next()?);
            if fields.next().is_some() || dd.len() != 2 || yy.len() != 2 {
                return None;
            }
            let yy: i32 = yy.parse().ok()?;
            let century = now.year() - now.year().rem_euclid(100);
            let mut year = century + yy;
            if year > now.year() + 50 {
                year -= 100;
            }
            date_time(year, mon, dd.parse().ok()?, time)
        }
        // asctime: `Sun Nov  6 08:49:37 1994`
        [day, mon, d, time, yyyy] if is_day_name(day, false) => {
            if d.is_empty() || d.len() > 2 || yyyy.len() != 4 {
                return None;
            }
            date_time(yyyy.parse().ok()?, mon, d.parse().ok()?, time)
        }
        _ => None,
    }
}

fn is_day_name(name: &str, long: bool) -> bool {
    const SHORT: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const LONG: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    if long {
        LONG.contains(&name)
    } else {
        SHORT.contains(&name)
    }
}

fn date_time(year: i32, month: &str, day: u32, time: &str) -> Option<DateTime<Utc>> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? + 1;
    let mut hms = time.split(':');
    let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || [h, m, s].iter().any(|f| f.len() != 2) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, day)?;
    let at = date.and_hms_opt(h.parse().ok()?, m.parse().ok()?, s.parse().ok()?)?;
    Some(at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn error_codes_are_the_documented_strings() {
        let all = [
            (AttemptError::Timeout, "timeout"),
            (AttemptError::Connect, "connect"),
            (AttemptError::Dns, "dns"),
            (AttemptError::Tls, "tls"),
            (AttemptError::AddressRefused, "address_refused"),
            (AttemptError::OAuthToken, "oauth_token"),
            (AttemptError::Body, "body"),
            (AttemptError::Request, "request"),
        ];
        for (error, code) in all {
            assert_eq!(error.code(), code);
        }
    }

    #[test]
    fn status_classes() {
        let status = |code| AttemptOutcome::Status {
            code,
            retry_after: None,
        };
        assert_eq!(status(101).status_class(), "1xx");
        assert_eq!(status(204).status_class(), "2xx");
        assert_eq!(status(302).status_class(), "3xx");
        assert_eq!(status(429).status_class(), "4xx");
        assert_eq!(status(503).status_class(), "5xx");
        assert_eq!(status(600).status_class(), "other");
        assert_eq!(
            AttemptOutcome::Failed(AttemptError::Dns).status_class(),
            "error"
        );
        assert_eq!(status(503).code(), "503");
        assert_eq!(AttemptOutcome::Failed(AttemptError::Tls).code(), "tls");
    }

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 28, 0).unwrap();
        let rows = [
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "99999999999999999999999",
                Some(Duration::from_secs(u64::MAX)),
            ),
            (
                "Wed, 21 Oct 2015 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed, 21 Oct 2015 07:00:00 GMT", Some(Duration::ZERO)),
            ("-5", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            // The obsolete forms RFC 9110 §5.6.7 requires recipients to accept.
            (
                "Wednesday, 21-Oct-15 07:28:30 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Wed Oct 21 07:29:00 2015", Some(Duration::from_secs(60))),
            // asctime pads a one-digit day with a space.
            ("Wed Oct  1 00:00:00 2015", Some(Duration::ZERO)),
            ("Wed, 21 Oct 2015 07:28:30 CET", None),
            ("Wed, 21 Foo 2015 07:28:30 GMT", None),
            ("Wed, 31 Feb 2015 07:28:30 GMT", None),
            ("Wed, 21 Oct 2015 7:28:30 GMT", None),
            ("Wednesday, 21-Oct-2015 07:28:30 GMT", None),
        ];
        for (value, expected) in rows {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
    }

    #[test]
    fn the_three_http_date_forms_name_the_same_instant() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let expected = Utc.with_ymd_and_hms(1994, 11, 6, 8, 49, 37).unwrap();
        for value in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_http_date(value, now), Some(expected), "{value:?}");
        }
    }

    #[test]
    fn rfc850_two_digit_years_are_never_more_than_50_years_ahead() {
        let now = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        let year = |value: &str| parse_http_date(value, now).map(|d| d.year());
        assert_eq!(year("Monday, 01-Jun-26 00:00:00 GMT"), Some(2026));
        assert_eq!(year("Thursday, 01-Jun-76 00:00:00 GMT"), Some(2076));
        assert_eq!(year("Wednesday, 01-Jun-77 00:00:00 GMT"), Some(1977));
        assert_eq!(year("Thursday, 01-Jun-99 00:00:00 GMT"), Some(1999));
    }
}
