//! Recent door and admin events for `GET /api/v1/events`, and a live feed for `?follow=1`.
//!
//! Every entry here was first written to the audit log (the log is the record; this is a
//! window onto its recent end). Entries are numbered in the order they happened, so a client
//! that follows the feed can tell whether it missed any (a slow follower that falls more than
//! [`FOLLOW_BACKLOG`] behind is told so and dropped).

use crate::daemon::{DoorObserver, EventStamp};
use crate::door::DoorEvent;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// How many recent events are kept for `GET /api/v1/events`.
pub const RECENT: usize = 500;
/// How far a follower may lag before it is dropped.
pub const FOLLOW_BACKLOG: usize = 256;

/// One event as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRecord {
    pub seq: u64,
    pub at_unix_ms: u64,
    /// "door" or "admin".
    pub source: &'static str,
    /// The event itself, as in the audit log (`event` names its kind).
    pub data: Value,
}

struct Recent {
    next_seq: u64,
    items: VecDeque<EventRecord>,
}

/// The recent events and the live feed; shared by the door loop and the API.
pub struct EventFeed {
    recent: Mutex<Recent>,
    live: broadcast::Sender<EventRecord>,
}

impl Default for EventFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl EventFeed {
    pub fn new() -> Self {
        Self {
            recent: Mutex::new(Recent {
                next_seq: 1,
                items: VecDeque::with_capacity(RECENT),
            }),
            live: broadcast::channel(FOLLOW_BACKLOG).0,
        }
    }

    /// Add an event (already in the audit log).
    pub fn push(&self, source: &'static str, data: Value) -> EventRecord {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let record = EventRecord {
            seq: recent.next_seq,
            at_unix_ms,
            source,
            data,
        };
        recent.next_seq += 1;
        if recent.items.len() == RECENT {
            recent.items.pop_front();
        }
        recent.items.push_back(record.clone());
        // Sent while the lock is held, so followers see events in `seq` order.
        let _ = self.live.send(record.clone());
        record
    }

    /// The last `limit` events, oldest first, and a receiver for everything after them: taken
    /// together, so a follower neither misses nor repeats an event.
    pub fn recent_and_follow(
        &self,
        limit: usize,
    ) -> (Vec<EventRecord>, broadcast::Receiver<EventRecord>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let skip = recent.items.len().saturating_sub(limit);
        let items = recent.items.iter().skip(skip).cloned().collect();
        (items, self.live.subscribe())
    }

    /// The last `limit` events, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<EventRecord> {
        self.recent_and_follow(limit).0
    }

    /// The newest event, if any.
    pub fn last(&self) -> Option<EventRecord> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.items.back().cloned()
    }
}

/// Passes door events to the feed, and on to another observer (a dry run's journal).
pub struct FeedObserver<'a> {
    pub feed: &'a EventFeed,
    pub next: &'a mut dyn DoorObserver,
}

impl DoorObserver for FeedObserver<'_> {
    fn on_event(&mut self, stamp: EventStamp, event: &DoorEvent) {
        let mut data = serde_json::to_value(event)
            .unwrap_or_else(|e| json!({"event": event.kind(), "error": e.to_string()}));
        if let Value::Object(map) = &mut data {
            map.insert("frame".into(), json!(stamp.frame));
        }
        self.feed.push("door", data);
        self.next.on_event(stamp, event);
    }

    fn on_frame_done(&mut self, seq: u64, decided: bool) {
        self.next.on_frame_done(seq, decided);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_newest_in_order_and_followers_get_what_comes_after() {
        let feed = EventFeed::new();
        for i in 0..(RECENT + 3) {
            feed.push("door", json!({"event": "relocked", "i": i}));
        }
        let recent = feed.recent(usize::MAX);
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0].seq, 4);
        assert_eq!(recent.last().unwrap().seq, (RECENT + 3) as u64);
        let (last_two, mut rx) = feed.recent_and_follow(2);
        assert_eq!(last_two.len(), 2);
        let next = feed.push("admin", json!({"event": "admin"}));
        assert_eq!(rx.try_recv().unwrap(), next);
        assert_eq!(next.seq, last_two[1].seq + 1);
        assert_eq!(feed.last().unwrap(), next);
    }
}
