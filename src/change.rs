//! The consent-change record (SPEC §1): parsing and validation.
//!
//! Guarantee: [`ConsentChange::parse`] either returns a record that satisfies every rule of
//! SPEC §1, or a [`Rejection`] that names the first rule it breaks. It never panics on any input
//! and never allocates a copy of an entity: entities stay borrowed as the exact bytes they
//! arrived in, so what reaches the receiver is the same JSON value, large
//! integers, unicode escapes and unknown fields included.
//!
//! Only the fields the contract names are looked at: the record's own fields, and in each entity
//! `id`, `organization_id`, `status` and `regulation`. Unknown top-level fields are ignored, so
//! the platform can add fields without breaking delivery.
//!
//! Fail closed: every check sees every member of an entity, whatever the nesting before it.
//! A record that a strict reader could read differently is rejected, never guessed at: nesting
//! deeper than [`rawjson::MAX_DEPTH`] levels anywhere (`too_deep`), a lone UTF-16 surrogate
//! escape (`invalid_json`), or a checked entity field given twice (`duplicate_key`: a receiver
//! reading the first copy must never see another organization than the one we checked).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::rawjson;

/// The regulation a change belongs to when neither the record nor its entity names one.
pub const DEFAULT_REGULATION: &str = "gdpr";

/// Which entity of the consent platform changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityType {
    Event,
    User,
}

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

/// One entity snapshot (`before`, `after` or `source`), kept as its original bytes.
#[derive(Debug, Clone)]
pub struct Entity<'a> {
    /// The entity exactly as it arrived: JSON text, validated with the record.
    pub raw: &'a str,
    /// Its top-level members, `(unescaped key, raw value text)` in text order, as
    /// [`rawjson::members`] reads them (the record's reading found them already).
    pub members: Vec<(Cow<'a, str>, &'a str)>,
    /// Its `id` (non-empty).
    pub id: Cow<'a, str>,
    /// Its `regulation` field, when that is a non-empty string.
    pub regulation: Option<Cow<'a, str>>,
    /// For an event entity: `status` absent or `"confirmed"`. Any other value, `null`
    /// included, means pending (SPEC §1).
    pub confirmed: bool,
}

/// A validated consent-change record (SPEC §1).
#[derive(Debug, Clone)]
pub struct ConsentChange<'a> {
    pub id: Cow<'a, str>,
    pub organization_id: Cow<'a, str>,
    /// `occurred_at` as the platform wrote it; forwarded verbatim as `created_at`.
    pub occurred_at: Cow<'a, str>,
    /// `occurred_at` parsed, for latency measurement and time-based operations.
    pub occurred_at_utc: DateTime<Utc>,
    pub entity_type: EntityType,
    pub action: Action,
    pub before: Option<Entity<'a>>,
    pub after: Option<Entity<'a>>,
    pub source: Option<Entity<'a>>,
    /// The regulation after defaulting: the record's, else the entity's (after, else before),
    /// else [`DEFAULT_REGULATION`].
    pub regulation: Cow<'a, str>,
    pub disable_integrations: bool,
}

/// Why a record was rejected. Each variant is one rule of SPEC §1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not valid JSON: {0}")]
    InvalidJson(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("missing required field `{0}`")]
    MissingField(String),
    #[error("field `{0}` must not be empty")]
    EmptyField(String),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("field `{field}` is {found}; expected one of {expected}")]
    InvalidValue {
        field: String,
        found: String,
        expected: &'static str,
    },
    #[error("field `occurred_at` is not an RFC 3339 timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("`{field}` is required when action is `{action}`")]
    MissingEntity {
        field: &'static str,
        action: &'static str,
    },
    #[error("`before.id` {before} differs from `after.id` {after}")]
    IdMismatch { before: String, after: String },
    #[error("nested deeper than {max} levels", max = rawjson::MAX_DEPTH)]
    TooDeep,
    #[error("field `{0}` appears more than once")]
    DuplicateKey(String),
    #[error(
        "`{field}` {found} differs from the record's organization_id {expected} (cross-tenant)"
    )]
    CrossTenant {
        field: String,
        found: String,
        expected: String,
    },
}

impl Rejection {
    /// A stable, low-cardinality code: used in metrics labels and rejected-topic headers.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidJson(_) => "invalid_json",
            Rejection::NotObject => "not_object",
            Rejection::MissingField(_) => "missing_field",
            Rejection::EmptyField(_) => "empty_field",
            Rejection::WrongType { .. } => "wrong_type",
            Rejection::InvalidValue { .. } => "invalid_value",
            Rejection::InvalidTimestamp(_) => "invalid_timestamp",
            Rejection::MissingEntity { .. } => "missing_entity",
            Rejection::IdMismatch { .. } => "id_mismatch",
            Rejection::TooDeep => "too_deep",
            Rejection::DuplicateKey(_) => "duplicate_key",
            Rejection::CrossTenant { .. } => "cross_tenant",
        }
    }

    /// Every code [`Rejection::code`] can return, for pre-registering metric series.
    pub const CODES: [&'static str; 12] = [
        "invalid_json",
        "not_object",
        "missing_field",
        "empty_field",
        "wrong_type",
        "invalid_value",
        "invalid_timestamp",
        "missing_entity",
        "id_mismatch",
        "too_deep",
        "duplicate_key",
        "cross_tenant",
    ];
}

impl EntityType {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Event => "event",
            EntityType::User => "user",
        }
    }
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
        }
    }
}

/// The record's top-level fields as serde_json reads them, each kept raw so that every rule can
/// be checked by hand and reported precisely. JSON `null` reads as `None`, the same as an absent
/// field. Only for records that [`rawjson::scan_record`] does not take.
#[derive(Deserialize)]
struct SerdeRecord<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    organization_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    occurred_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    entity_type: Option<&'a RawValue>,
    #[serde(borrow, default)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    before: Option<&'a RawValue>,
    #[serde(borrow, default)]
    after: Option<&'a RawValue>,
    #[serde(borrow, default)]
    source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    regulation: Option<&'a RawValue>,
    #[serde(borrow, default)]
    disable_integrations: Option<&'a RawValue>,
}

/// An entity's raw text, with its top-level members when they were found on the way.
type RawEntity<'a> = (&'a str, Option<Members<'a>>);
type Members<'a> = Vec<(Cow<'a, str>, &'a str)>;

/// The record's top-level fields as raw JSON text, however they were read. `null` is `None`.
#[derive(Default)]
struct RawRecord<'a> {
    id: Option<&'a str>,
    organization_id: Option<&'a str>,
    occurred_at: Option<&'a str>,
    entity_type: Option<&'a str>,
    action: Option<&'a str>,
    before: Option<RawEntity<'a>>,
    after: Option<RawEntity<'a>>,
    source: Option<RawEntity<'a>>,
    regulation: Option<&'a str>,
    disable_integrations: Option<&'a str>,
}

impl<'a> RawRecord<'a> {
    /// The fast way, one pass: [`rawjson::scan_record`]. `None` for any record it does not
    /// take, and for a field given twice, which serde_json reports.
    fn scan(text: &'a str) -> Option<Self> {
        let mut record = RawRecord::default();
        // One bit per field: serde_json refuses a field seen twice, even when it was `null`.
        let mut seen = 0u16;
        for member in rawjson::scan_record(text)? {
            let value = (member.value != "null").then_some(member.value);
            let bit = match member.key {
                "id" => set(&mut record.id, value, 0),
                "organization_id" => set(&mut record.organization_id, value, 1),
                "occurred_at" => set(&mut record.occurred_at, value, 2),
                "entity_type" => set(&mut record.entity_type, value, 3),
                "action" => set(&mut record.action, value, 4),
                "regulation" => set(&mut record.regulation, value, 5),
                "disable_integrations" => set(&mut record.disable_integrations, value, 6),
                "before" => set(&mut record.before, value.map(|v| (v, member.members)), 7),
                "after" => set(&mut record.after, value.map(|v| (v, member.members)), 8),
                "source" => set(&mut record.source, value.map(|v| (v, member.members)), 9),
                _ => continue,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
        }
        return Some(record);

        fn set<T>(slot: &mut Option<T>, value: Option<T>, bit: u16) -> u16 {
            *slot = value;
            1 << bit
        }
    }

    /// The slow way, for every other record: serde_json's reading, then
    /// [`rawjson::check_structure`]; names the first thing wrong.
    fn read(text: &'a str) -> Result<Self, Rejection> {
        // On an object, the only non-syntax error is a duplicate key.
        let record: SerdeRecord<'a> =
            serde_json::from_str(text).map_err(|e| Rejection::InvalidJson(e.to_string()))?;
        // serde_json's raw reading checks neither depth nor surrogates: refuse what a full
        // reading would refuse, before any field is looked at.
        rawjson::check_structure(text).map_err(|malformed| match malformed {
            rawjson::Malformed::TooDeep => Rejection::TooDeep,
            rawjson::Malformed::LoneSurrogate => {
                Rejection::InvalidJson("a \\u escape holds a lone UTF-16 surrogate".into())
            }
            rawjson::Malformed::NumberOutOfRange => {
                Rejection::InvalidJson("a number is out of range".into())
            }
            rawjson::Malformed::Broken => Rejection::InvalidJson("unbalanced JSON".into()),
        })?;
        let raw = |v: Option<&'a RawValue>| v.map(RawValue::get);
        let entity = |v: Option<&'a RawValue>| v.map(|v| (v.get(), None));
        Ok(RawRecord {
            id: raw(record.id),
            organization_id: raw(record.organization_id),
            occurred_at: raw(record.occurred_at),
            entity_type: raw(record.entity_type),
            action: raw(record.action),
            before: entity(record.before),
            after: entity(record.after),
            source: entity(record.source),
            regulation: raw(record.regulation),
            disable_integrations: raw(record.disable_integrations),
        })
    }
}

impl<'a> ConsentChange<'a> {
    /// Parses and validates one record value (the Kafka record's value, or one JSON line).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Rejection> {
        let text = std::str::from_utf8(bytes)
            .map_err(|e| Rejection::InvalidJson(format!("not UTF-8: {e}")))?;
        Self::parse_str(text)
    }

    /// [`ConsentChange::parse`] for input already known to be UTF-8.
    pub fn parse_str(text: &'a str) -> Result<Self, Rejection> {
        // Structs also deserialize from JSON arrays in serde: look at the shape first.
        if first_byte(text) != Some(b'{') {
            return Err(match serde_json::from_str::<&RawValue>(text) {
                Ok(_) => Rejection::NotObject,
                Err(e) => Rejection::InvalidJson(e.to_string()),
            });
        }
        // Both ways refuse the same records; the slow one says why.
        let record = match RawRecord::scan(text) {
            Some(record) => record,
            None => RawRecord::read(text)?,
        };

        let id = required_string("id", record.id)?;
        let organization_id = required_string("organization_id", record.organization_id)?;
        let occurred_at = required_string("occurred_at", record.occurred_at)?;
        let occurred_at_utc = DateTime::parse_from_rfc3339(&occurred_at)
            .map_err(|e| Rejection::InvalidTimestamp(format!("{} ({e})", excerpt(&occurred_at))))?
            .with_timezone(&Utc);
        let entity_type = match &*required_string("entity_type", record.entity_type)? {
            "event" => EntityType::Event,
            "user" => EntityType::User,
            other => {
                return Err(invalid_value("entity_type", other, "\"event\", \"user\""));
            }
        };
        let action = match &*required_string("action", record.action)? {
            "created" => Action::Created,
            "updated" => Action::Updated,
            "deleted" => Action::Deleted,
            other => {
                return Err(invalid_value(
                    "action",
                    other,
                    "\"created\", \"updated\", \"deleted\"",
                ));
            }
        };

        let before = optional_entity("before", record.before, &organization_id)?;
        let after = optional_entity("after", record.after, &organization_id)?;
        let source = optional_entity("source", record.source, &organization_id)?;

        let needs_before = matches!(action, Action::Updated | Action::Deleted);
        let needs_after = matches!(action, Action::Created | Action::Updated);
        if needs_before && before.is_none() {
            return Err(Rejection::MissingEntity {
                field: "before",
                action: action.as_str(),
            });
        }
        if needs_after && after.is_none() {
            return Err(Rejection::MissingEntity {
                field: "after",
                action: action.as_str(),
            });
        }
        if let (Some(b), Some(a)) = (&before, &after) {
            if b.id != a.id {
                return Err(Rejection::IdMismatch {
                    before: quoted(&b.id),
                    after: quoted(&a.id),
                });
            }
        }

        let regulation = match record.regulation {
            Some(raw) => non_empty_text("regulation", raw)?,
            None => after
                .as_ref()
                .and_then(|e| e.regulation.clone())
                .or_else(|| before.as_ref().and_then(|e| e.regulation.clone()))
                .unwrap_or(Cow::Borrowed(DEFAULT_REGULATION)),
        };

        let disable_integrations = match record.disable_integrations {
            None => false,
            Some(raw) => match raw {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Rejection::WrongType {
                        field: "disable_integrations".into(),
                        expected: "a boolean",
                    })
                }
            },
        };

        Ok(ConsentChange {
            id,
            organization_id,
            occurred_at,
            occurred_at_utc,
            entity_type,
            action,
            before,
            after,
            source,
            regulation,
            disable_integrations,
        })
    }
}

fn first_byte(text: &str) -> Option<u8> {
    text.bytes().find(|b| !b.is_ascii_whitespace())
}

fn is_object(raw: &str) -> bool {
    first_byte(raw) == Some(b'{')
}

/// Decodes raw JSON text (from a validated value) that must be a string: escapes resolved,
/// borrowed when it has none.
fn text<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
    rawjson::string(raw).ok_or_else(|| Rejection::WrongType {
        field: field.to_owned(),
        expected: "a string",
    })
}

fn non_empty_text<'a>(field: &str, raw: &'a str) -> Result<Cow<'a, str>, Rejection> {
    let value = text(field, raw)?;
    if value.is_empty() {
        return Err(Rejection::EmptyField(field.to_owned()));
    }
    Ok(value)
}

fn required_string<'a>(field: &str, raw: Option<&'a str>) -> Result<Cow<'a, str>, Rejection> {
    match raw {
        Some(raw) => non_empty_text(field, raw),
        None => Err(Rejection::MissingField(field.to_owned())),
    }
}

fn optional_entity<'a>(
    field: &'static str,
    raw: Option<RawEntity<'a>>,
    organization_id: &str,
) -> Result<Option<Entity<'a>>, Rejection> {
    let Some((raw, members)) = raw else {
        return Ok(None);
    };
    if !is_object(raw) {
        return Err(Rejection::WrongType {
            field: field.to_owned(),
            expected: "an object or null",
        });
    }
    // Validated JSON already: read the top-level members without a tree, unless the record's
    // reading found them. Either way all of them or none, so no check can be cut short by what
    // precedes.
    let members = members
        .or_else(|| rawjson::members(raw))
        .ok_or_else(|| Rejection::InvalidJson(format!("`{field}` is not a readable object")))?;
    let (mut id, mut org, mut status, mut regulation) = (None, None, None, None);
    for (key, value) in &members {
        let slot = match &**key {
            "id" => &mut id,
            "organization_id" => &mut org,
            "status" => &mut status,
            "regulation" => &mut regulation,
            _ => continue,
        };
        if slot.replace(*value).is_some() {
            return Err(Rejection::DuplicateKey(format!("{field}.{key}")));
        }
    }
    // The names are built only for a rejection: most records have none.
    let id = match id.filter(|v| *v != "null") {
        Some(v) => match rawjson::string(v) {
            Some(id) if !id.is_empty() => id,
            _ => non_empty_text(&format!("{field}.id"), v)?,
        },
        None => return Err(Rejection::MissingField(format!("{field}.id"))),
    };
    if let Some(org) = org.filter(|v| *v != "null") {
        let org = match rawjson::string(org) {
            Some(org) => org,
            None => text(&format!("{field}.organization_id"), org)?,
        };
        if org != organization_id {
            return Err(Rejection::CrossTenant {
                field: format!("{field}.organization_id"),
                found: quoted(&org),
                expected: quoted(organization_id),
            });
        }
    }
    let regulation = regulation
        .and_then(rawjson::string)
        .filter(|r| !r.is_empty());
    // SPEC §1: confirmed when absent or "confirmed"; any other value, null included, is pending.
    let confirmed = match status {
        None => true,
        Some(status) => rawjson::string(status).is_some_and(|s| s == "confirmed"),
    };
    Ok(Some(Entity {
        raw,
        members,
        id,
        regulation,
        confirmed,
    }))
}

fn invalid_value(field: &str, found: &str, expected: &'static str) -> Rejection {
    Rejection::InvalidValue {
        field: field.to_owned(),
        found: quoted(found),
        expected,
    }
}

/// A value quoted for an error message, cut so that a huge field cannot flood a log line.
fn quoted(value: &str) -> String {
    format!("\"{}\"", excerpt(value))
}

fn excerpt(value: &str) -> String {
    const MAX: usize = 64;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut}…")
    }
}
