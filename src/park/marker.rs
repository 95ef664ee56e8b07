//! The watermark marker: what the last owner of an input partition had finished, when the
//! broker refused its last offset commit.
//!
//! Why: during a cooperative rebalance librdkafka may have rejoined the group before the revoke
//! callback commits, and the broker then refuses the commit (`IllegalGeneration`); the next
//! owner would re-deliver everything since the last accepted commit. So at revoke and at
//! shutdown, a partition whose watermark is not confirmed as committed gets a marker on its
//! retry partition (which its next owner scans anyway before delivering anything).
//!
//! Guarantee: a marker is used only while the group's committed offset is still the one the
//! marker names (`committed`): a later owner's commit, or a replay's reset, makes it obsolete.
//! Everything below `watermark` was done, so starting there loses nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Header that tells a marker from a parked event on the retry topic.
pub const MARKER_HEADER: &str = "consent-webhooks-marker";
/// Its value for a watermark marker.
pub const WATERMARK: &str = "input-watermark";
/// The marker's record key.
pub const MARKER_KEY: &[u8] = b"\0input-watermark";

const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkMarker {
    pub schema_version: u32,
    pub input_topic: String,
    pub partition: i32,
    /// Everything below it was done.
    pub watermark: i64,
    /// The group's committed offset as last confirmed by the writer (`None`: none).
    pub committed: Option<i64>,
    pub written_at: DateTime<Utc>,
}

impl WatermarkMarker {
    pub fn new(input_topic: &str, partition: i32, watermark: i64, committed: Option<i64>) -> Self {
        WatermarkMarker {
            schema_version: SCHEMA_VERSION,
            input_topic: input_topic.to_owned(),
            partition,
            watermark,
            committed,
            written_at: Utc::now(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a marker serializes")
    }

    /// `None` for anything that is not a marker of this version.
    pub fn decode(bytes: &[u8]) -> Option<WatermarkMarker> {
        serde_json::from_slice::<WatermarkMarker>(bytes)
            .ok()
            .filter(|m| m.schema_version == SCHEMA_VERSION)
    }

    /// Where the new owner starts, given the group's committed offset now: the marker's
    /// watermark while the committed offset is still the one it names and is below it.
    pub fn resume_at(&self, input_topic: &str, committed_now: Option<i64>) -> Option<i64> {
        (self.input_topic == input_topic
            && committed_now == self.committed
            && committed_now.is_none_or(|c| c < self.watermark))
        .then_some(self.watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_only_while_the_commit_it_names_is_still_the_groups() {
        let marker = WatermarkMarker::new("changes", 3, 120, Some(100));
        let back = WatermarkMarker::decode(&marker.encode()).unwrap();
        assert_eq!(back, marker);
        assert_eq!(back.resume_at("changes", Some(100)), Some(120));
        // A later owner committed, or a replay reset the group: obsolete.
        assert_eq!(back.resume_at("changes", Some(130)), None);
        assert_eq!(back.resume_at("changes", Some(0)), None);
        assert_eq!(back.resume_at("changes", None), None);
        assert_eq!(back.resume_at("other", Some(100)), None);
        let first = WatermarkMarker::new("changes", 0, 7, None);
        assert_eq!(first.resume_at("changes", None), Some(7));
        assert!(WatermarkMarker::decode(b"{\"schema_version\":1}").is_none());
    }
}
