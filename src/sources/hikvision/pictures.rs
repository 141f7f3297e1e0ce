//! The last picture each camera channel sent in its alert stream (`image/jpeg` parts follow
//! the alert they belong to). Kept in memory, one per channel, for snapshots with events.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub jpeg: bytes::Bytes,
    pub at: DateTime<Utc>,
}

/// (device id, channel; `None` = device level).
type Key = (String, Option<u32>);

/// Shared by the Hikvision sources (writers) and whoever needs a picture (readers).
#[derive(Clone, Default)]
pub struct Pictures(Arc<Mutex<HashMap<Key, Picture>>>);

/// More channels than any NVR has: a misbehaving device cannot grow the map without bound.
const MAX_ENTRIES: usize = 256;

impl Pictures {
    pub fn put(&self, device: &str, channel: Option<u32>, jpeg: bytes::Bytes) {
        if !jpeg.starts_with(&[0xFF, 0xD8]) {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            let key = (device.to_string(), channel);
            if m.len() >= MAX_ENTRIES && !m.contains_key(&key) {
                return;
            }
            m.insert(
                key,
                Picture {
                    jpeg,
                    at: Utc::now(),
                },
            );
        }
    }

    pub fn latest(&self, device: &str, channel: Option<u32>) -> Option<Picture> {
        self.0
            .lock()
            .ok()?
            .get(&(device.to_string(), channel))
            .cloned()
    }
}
