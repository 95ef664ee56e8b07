//! Live organizations: the registry topic, followed while the service runs, and the rule that
//! decides, the same way on every replica, whether a record's organization was known.
//!
//! The registry is a compacted topic with one partition (key: organization id; value: the
//! organization's settings with the keys of its `[organizations.<id>]` section, as JSON or as
//! TOML text; a tombstone removes it). Its values hold secret *references* only (`{ env = .. }`,
//! `{ file = .. }`), resolved on each replica; files are read again every `secret_refresh`, so
//! a Kubernetes Secret updated in place applies without a restart.
//!
//! Guarantees:
//! - **Read before input.** `run` reads the registry to its end before it takes input
//!   partitions; afterwards each change applies within a poll (well under 5 s) without a
//!   restart. A changed URL, secret or filter applies from the next attempt; events already in
//!   their retries keep their schedule.
//! - **File and registry.** The file's organizations are the base; a registry entry of the same
//!   id wins over the file's while it exists (its tombstone brings the file's back).
//! - **The same decision on every replica** ([`Known`]): an organization is known for a record
//!   stamped `T` when it was registered at `T` (its `registered-at`, kept across updates) and is
//!   still registered. A replica decides "unknown" (skip) only once its view of the registry is
//!   complete up to `T` (every registry record appended before `T` applied); until then the
//!   record waits. File organizations are known at every time. A removal applies to what is
//!   decided after it is applied: a replica that has not applied it yet may still deliver, never
//!   the other way round.
//! - **Nothing secret leaves.** Values are stored and echoed as written (references); resolved
//!   secrets live only in [`OrganizationSettings`].

mod follow;
pub mod value;
mod write;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::config::{DeliverySettings, OrganizationSettings, RegistrySettings, Settings};

pub use follow::{caught_up, check_topic, Follower};
pub use write::{WriteError, Writer, Written};

/// The header that carries an organization's first registration time (ms since the epoch)
/// across its updates: compaction keeps only the last record of a key.
pub const REGISTERED_AT_HEADER: &str = "registered-at";

/// An organization known for every record: defined in the file.
pub const ALWAYS: i64 = i64::MIN;

/// One organization of the registry, as this replica holds it.
#[derive(Clone)]
pub struct Entry {
    /// The value as stored: a JSON object with secret references, never secret values.
    pub value: serde_json::Value,
    /// Its settings, secrets resolved here; `None` when the value does not validate on this
    /// replica (the error is logged and counted; the organization is then unknown here).
    pub settings: Option<Arc<OrganizationSettings>>,
    /// When it was first registered (ms, broker time).
    pub registered_at: i64,
    /// Its record's offset in the registry topic.
    pub offset: i64,
    /// Why the value does not validate here, for the API.
    pub error: Option<String>,
    /// Whether the value names a secret file (read again every `secret_refresh`).
    pub reads_files: bool,
}

impl Entry {
    /// How the API and the CLI show it: the value as stored (secret references only), when it
    /// was registered (RFC 3339, ms), its offset, and why it does not validate here, if so.
    pub fn to_json(&self, id: &str) -> serde_json::Value {
        serde_json::json!({
            "id": id,
            "organization": self.value,
            "registered_at": chrono::DateTime::<chrono::Utc>::from_timestamp_millis(self.registered_at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            "offset": self.offset,
            "error": self.error,
        })
    }
}

/// What an organization is for a record of time `T`: see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Yes,
    /// Not registered at `T` (never, not yet, or removed): skip.
    No,
    /// The view is not complete up to `T` yet: ask again later.
    NotYet,
}

struct FileOrganization {
    source: toml::Value,
    settings: RwLock<Arc<OrganizationSettings>>,
}

impl FileOrganization {
    fn settings(&self) -> Arc<OrganizationSettings> {
        self.settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// An organization's live settings, handed to the pipeline's lanes.
#[derive(Clone)]
pub struct Live {
    pub settings: Arc<OrganizationSettings>,
    pub registered_at: i64,
}

/// Applies a change to the pipeline: `Some` adds or replaces, `None` removes.
pub type Apply = Arc<dyn Fn(&str, Option<Live>) + Send + Sync>;

/// The organizations this replica knows, from the file and the registry.
pub struct Registry {
    settings: Option<RegistrySettings>,
    delivery: DeliverySettings,
    config_dir: PathBuf,
    /// The file's organizations as written (for their secret files) and as validated (then
    /// as read again).
    file: BTreeMap<String, FileOrganization>,
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Every registry record appended before this time (ms) is applied here.
    complete: watch::Sender<i64>,
    /// The last registry offset applied (-1: none).
    applied: watch::Sender<i64>,
}

impl Registry {
    pub fn new(settings: &Settings) -> Arc<Registry> {
        let file = settings
            .organizations
            .iter()
            .filter_map(|(id, org)| {
                let source = settings.organization_sources.get(id)?;
                let file = FileOrganization {
                    source: source.clone(),
                    settings: RwLock::new(Arc::new(org.clone())),
                };
                Some((id.clone(), file))
            })
            .collect();
        let complete = if settings.registry.is_some() {
            i64::MIN
        } else {
            i64::MAX
        };
        Arc::new(Registry {
            settings: settings.registry.clone(),
            delivery: settings.delivery.clone(),
            config_dir: settings.config_dir.clone(),
            file,
            entries: RwLock::new(BTreeMap::new()),
            complete: watch::Sender::new(complete),
            applied: watch::Sender::new(-1),
        })
    }

    /// Whether organizations come from a registry topic too.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// The organization `id` for a record stamped `at` (ms), given `registered_at` (what the
    /// pipeline holds for it; `None`: it has no endpoint here).
    pub fn known(&self, registered_at: Option<i64>, at: i64) -> Known {
        match registered_at {
            Some(since) if since <= at => Known::Yes,
            // Registered after the record, or not at all: final once the view covers `at`.
            _ if *self.complete.borrow() >= at => Known::No,
            _ => Known::NotYet,
        }
    }

    /// Woken each time the view is known complete up to a later time.
    pub fn watch_complete(&self) -> watch::Receiver<i64> {
        self.complete.subscribe()
    }

    /// The time (ms) up to which the view is known complete.
    pub fn complete_until(&self) -> i64 {
        *self.complete.borrow()
    }

    /// The last registry offset applied (-1: none).
    pub fn applied_offset(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Waits until the registry offset `offset` is applied here.
    pub async fn applied(&self, offset: i64) {
        let mut applied = self.applied.subscribe();
        // The sender lives as long as `self`: `wait_for` cannot fail while we borrow it.
        let _ = applied.wait_for(|a| *a >= offset).await;
    }

    /// The registry's entry `id`.
    pub fn get(&self, id: &str) -> Option<Entry> {
        self.read().get(id).cloned()
    }

    /// Up to `limit` entries with ids after `after`, in id order.
    pub fn page(&self, after: Option<&str>, limit: usize) -> Vec<(String, Entry)> {
        let entries = self.read();
        let range = match after {
            Some(after) => entries
                .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => entries.range::<str, _>(..),
        };
        range
            .take(limit)
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect()
    }

    /// Registry entries whose value validates here.
    pub fn valid_entries(&self) -> usize {
        self.read()
            .values()
            .filter(|e| e.settings.is_some())
            .count()
    }

    /// Whether the file defines `id`.
    pub fn in_file(&self, id: &str) -> bool {
        self.file.contains_key(id)
    }

    /// The settings of `id` now (the registry's, else the file's), for one-off use (`resend`,
    /// the admin API's test ping).
    pub fn settings_of(&self, id: &str) -> Option<Arc<OrganizationSettings>> {
        if let Some(entry) = self.read().get(id) {
            if let Some(settings) = &entry.settings {
                return Some(settings.clone());
            }
        }
        self.file.get(id).map(FileOrganization::settings)
    }

    /// Every organization known now, with its settings (the registry's over the file's).
    pub fn all(&self) -> BTreeMap<String, Arc<OrganizationSettings>> {
        let mut all: BTreeMap<_, _> = self
            .file
            .iter()
            .map(|(id, f)| (id.clone(), f.settings()))
            .collect();
        for (id, entry) in self.read().iter() {
            if let Some(settings) = &entry.settings {
                all.insert(id.clone(), settings.clone());
            }
        }
        all
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates a registry value for `id` on this replica (environment, secret files).
    pub fn validate(
        &self,
        id: &str,
        value: &toml::Value,
    ) -> Result<OrganizationSettings, crate::config::ConfigError> {
        crate::config::organization_from_value(
            id,
            value,
            &self.delivery,
            &self.config_dir,
            &|name| std::env::var(name).ok(),
        )
    }

    /// What the pipeline holds for `id` now: its registry entry, else the file's, else none.
    fn live(&self, id: &str) -> Option<Live> {
        if let Some(entry) = self.read().get(id) {
            if let Some(settings) = &entry.settings {
                // Over a file organization, it was known all along: only its settings change.
                let registered_at = if self.file.contains_key(id) {
                    ALWAYS
                } else {
                    entry.registered_at
                };
                return Some(Live {
                    settings: settings.clone(),
                    registered_at,
                });
            }
        }
        self.file.get(id).map(|f| Live {
            settings: f.settings(),
            registered_at: ALWAYS,
        })
    }
}

/// A digest of an organization's resolved secrets, to tell when a secret file changed. Never
/// shown anywhere.
fn secret_digest(org: &OrganizationSettings) -> [u8; 32] {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    };
    for key in [&org.signing_key, &org.previous_signing_key] {
        part(key.as_ref().map_or(&[][..], |k| k.as_bytes()));
    }
    let headers = org
        .headers
        .iter()
        .chain(org.oauth.iter().flat_map(|o| o.headers.iter()));
    for (name, value) in headers {
        if let crate::config::CustomHeaderValue::Secret(secret) = value {
            part(name.as_bytes());
            part(secret.expose_secret().as_bytes());
        }
    }
    if let Some(oauth) = &org.oauth {
        part(oauth.client_secret.expose_secret().as_bytes());
    }
    hash.finalize().into()
}

/// `settings` with the registry's organizations added (a registry entry wins over the file's),
/// read to its end once, when the registry is enabled: for the commands that run once
/// (`resend`, `redrive`).
pub async fn with_registered(mut settings: Settings) -> anyhow::Result<Settings> {
    if settings.registry.is_none() {
        return Ok(settings);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let (_, follower) = read_once(&mut settings, &stop).await?;
    stop.cancel();
    let _ = tokio::task::spawn_blocking(move || follower.join()).await;
    Ok(settings)
}

/// Reads the registry to its end once (when enabled) and adds its organizations to
/// `settings.organizations` (a registry entry wins over the file's). Returns the registry,
/// still followed until `stop` (the `organizations` command writes through it).
pub async fn read_once(
    settings: &mut Settings,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(Arc<Registry>, Follower)> {
    let registry = Registry::new(settings);
    if let Some(registry_settings) = &settings.registry {
        check_topic(&settings.kafka, &registry_settings.topic).await?;
    }
    let metrics = Arc::new(crate::telemetry::Metrics::new([]));
    let follower = Follower::start(
        registry.clone(),
        &settings.kafka,
        Arc::new(|_: &str, _: Option<Live>| {}),
        metrics,
        stop.clone(),
    )?;
    if registry.enabled() {
        let now = chrono::Utc::now().timestamp_millis();
        if !caught_up(&registry, now, stop).await {
            anyhow::bail!("interrupted while reading the organization registry");
        }
        settings.organizations = registry
            .all()
            .into_iter()
            .map(|(id, org)| (id, (*org).clone()))
            .collect();
    }
    Ok((registry, follower))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(enabled: bool) -> Arc<Registry> {
        let mut toml = String::from("[kafka]\nbrokers = \"localhost:9092\"\n");
        if enabled {
            toml.push_str("[registry]\nenabled = true\n");
        }
        let settings =
            crate::config::parse_str(&toml, std::path::Path::new("."), &|_| None, &[]).unwrap();
        Registry::new(&settings)
    }

    /// The rule of the module doc: known when registered at the record's time; "unknown" only
    /// once the view covers that time, never before.
    #[test]
    fn unknown_is_decided_only_once_the_view_covers_the_records_time() {
        let registry = registry(true);
        assert_eq!(
            registry.known(Some(ALWAYS), 5),
            Known::Yes,
            "file organizations"
        );
        assert_eq!(registry.known(Some(100), 100), Known::Yes);
        assert_eq!(registry.known(Some(100), 150), Known::Yes);
        // Registered after the record, or not at all: wait while the view is behind.
        assert_eq!(registry.known(Some(200), 150), Known::NotYet);
        assert_eq!(registry.known(None, 150), Known::NotYet);
        registry.complete.send_replace(149);
        assert_eq!(registry.known(None, 150), Known::NotYet);
        registry.complete.send_replace(150);
        assert_eq!(registry.known(None, 150), Known::No);
        assert_eq!(registry.known(Some(200), 150), Known::No);
        assert_eq!(registry.known(None, 151), Known::NotYet);
    }

    /// Without a registry nothing waits: the file is all there is.
    #[test]
    fn without_a_registry_unknown_is_final_at_once() {
        let registry = registry(false);
        assert!(!registry.enabled());
        assert_eq!(registry.known(None, i64::MAX - 1), Known::No);
    }
}
