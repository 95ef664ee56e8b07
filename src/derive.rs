//! Derivation: one validated consent change → zero or one webhook event (SPEC §3).
//!
//! Guarantee: pure. No I/O, no clock, no randomness, no state between records: the result
//! depends only on the record and the [`Rules`], so a replay from any offset, in any process,
//! derives the same events with the same ids and the same bytes.

use crate::change::{Action, ConsentChange, EntityType, Rejection};
use crate::equivalence::{members_effectively_equal, DEFAULT_VOLATILE_FIELDS};
use crate::webhook::{event_id, EventType, WebhookEvent};

/// The tunable parts of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Top-level user fields ignored when deciding whether an update is effective.
    pub volatile_fields: Vec<String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            volatile_fields: DEFAULT_VOLATILE_FIELDS.map(String::from).to_vec(),
        }
    }
}

/// What a valid record yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    Webhook(WebhookEvent),
    Suppressed(Suppression),
}

/// Why a valid record yields no webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suppression {
    /// R7: `disable_integrations: true` (an import or back-fill).
    IntegrationsDisabled,
    /// R5, rule 1: a user update whose source event is still pending.
    PendingSource,
    /// R5, rule 2: a user update that changes only volatile fields.
    NotEffective,
}

impl Suppression {
    pub const ALL: [Suppression; 3] = [
        Suppression::IntegrationsDisabled,
        Suppression::PendingSource,
        Suppression::NotEffective,
    ];

    /// A stable code for metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            Suppression::IntegrationsDisabled => "integrations_disabled",
            Suppression::PendingSource => "pending_source",
            Suppression::NotEffective => "not_effective",
        }
    }
}

/// Parses, validates and derives in one step: the whole pure core for one record value.
pub fn derive_record(bytes: &[u8], rules: &Rules) -> Result<Derived, Rejection> {
    ConsentChange::parse(bytes).map(|change| derive(&change, rules))
}

/// Applies SPEC §3 to a validated change.
pub fn derive(change: &ConsentChange<'_>, rules: &Rules) -> Derived {
    if change.disable_integrations {
        return Derived::Suppressed(Suppression::IntegrationsDisabled);
    }
    // `parse` guarantees `before` for updated/deleted and `after` for created/updated.
    let before = change.before.as_ref().map(|e| e.raw);
    let after = change.after.as_ref().map(|e| e.raw);
    let (event_type, parameters) = match (change.entity_type, change.action) {
        (EntityType::Event, Action::Created) => (EventType::EventCreated, entity(after)),
        (EntityType::Event, Action::Updated) => {
            (EventType::EventUpdated, update(change, before, after))
        }
        (EntityType::Event, Action::Deleted) => (EventType::EventDeleted, entity(before)),
        (EntityType::User, Action::Created) => (EventType::UserCreated, entity(after)),
        (EntityType::User, Action::Updated) => {
            if let Some(reason) = user_update_suppression(change, rules) {
                return Derived::Suppressed(reason);
            }
            (EventType::UserUpdated, update(change, before, after))
        }
        (EntityType::User, Action::Deleted) => (EventType::UserDeleted, entity(before)),
    };

    let id = event_id(&change.organization_id, &change.id);
    // Sized up front: the entities dominate, and growing by doubling would copy them again.
    let entities: usize = [&change.before, &change.after, &change.source]
        .into_iter()
        .flatten()
        .map(|e| e.raw.len())
        .sum();
    let mut bytes = Vec::with_capacity(entities + 256 + change.organization_id.len());
    write_body(
        &mut bytes,
        &Body {
            id: &id,
            event_type,
            organization_id: &change.organization_id,
            regulation: &change.regulation,
            created_at: &change.occurred_at,
            parameters,
        },
    );
    Derived::Webhook(WebhookEvent {
        id,
        event_type,
        organization_id: change.organization_id.clone().into_owned(),
        regulation: change.regulation.clone().into_owned(),
        change_id: change.id.clone().into_owned(),
        occurred_at: change.occurred_at_utc,
        body: bytes.into(),
    })
}

fn user_update_suppression(change: &ConsentChange<'_>, rules: &Rules) -> Option<Suppression> {
    if change
        .source
        .as_ref()
        .is_some_and(|source| !source.confirmed)
    {
        return Some(Suppression::PendingSource);
    }
    let (before, after) = (change.before.as_ref()?, change.after.as_ref()?);
    // Entities are validated with the record, their members read with it: only the members
    // whose texts differ are read again.
    members_effectively_equal(&before.members, &after.members, &rules.volatile_fields)
        .then_some(Suppression::NotEffective)
}

/// The body, field order fixed: `id, type, organization_id, regulation, created_at, parameters`.
struct Body<'a> {
    id: &'a str,
    event_type: EventType,
    organization_id: &'a str,
    regulation: &'a str,
    created_at: &'a str,
    parameters: Parameters<'a>,
}

/// Entities are JSON text, validated with the record.
enum Parameters<'a> {
    Entity {
        entity: &'a str,
    },
    Update {
        source: Option<&'a str>,
        old_entity: &'a str,
        new_entity: &'a str,
    },
}

/// Writes the body as compact JSON: strings escaped by serde_json, entities copied verbatim.
fn write_body(out: &mut Vec<u8>, body: &Body<'_>) {
    let string = |out: &mut Vec<u8>, name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        serde_json::to_writer(&mut *out, value).expect("a string always serializes");
    };
    string(out, "{\"id\":", body.id);
    string(out, ",\"type\":", body.event_type.as_str());
    string(out, ",\"organization_id\":", body.organization_id);
    string(out, ",\"regulation\":", body.regulation);
    string(out, ",\"created_at\":", body.created_at);
    let mut raw = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    };
    match body.parameters {
        Parameters::Entity { entity } => raw(",\"parameters\":{\"entity\":", entity),
        Parameters::Update {
            source,
            old_entity,
            new_entity,
        } => {
            raw(",\"parameters\":{\"source\":", source.unwrap_or("null"));
            raw(",\"old_entity\":", old_entity);
            raw(",\"new_entity\":", new_entity);
        }
    }
    out.extend_from_slice(b"}}");
}

fn entity(raw: Option<&str>) -> Parameters<'_> {
    Parameters::Entity {
        entity: raw.expect("validated: the entity required by the action is present"),
    }
}

fn update<'a>(
    change: &ConsentChange<'a>,
    before: Option<&'a str>,
    after: Option<&'a str>,
) -> Parameters<'a> {
    Parameters::Update {
        source: change.source.as_ref().map(|s| s.raw),
        old_entity: before.expect("validated: updates carry before"),
        new_entity: after.expect("validated: updates carry after"),
    }
}

#[cfg(test)]
mod tests;
