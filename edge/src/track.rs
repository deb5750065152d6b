//! Face tracks: which face of this frame is which face of the frames before.
//!
//! The door decides per person in view, not per frame: two people are two tracks, and a stranger
//! who stays in view stays one track that is counted again while it stays. The tracker links each
//! frame's face boxes to the live tracks (greedily, best link first: box overlap, else a centre
//! that moved less than half the box size), opens a track for a face that links to none, and ends
//! a track unseen for `lost_after`. Pure geometry over time; it never sees pixels.

use crate::detect::BBox;
use serde::Serialize;
use std::time::Duration;

/// One face followed over frames; ids are never reused while the tracker lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

impl std::fmt::Display for TrackId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "track {}", self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// A box overlapping a track's last box at least this much (IoU) continues it.
    pub min_iou: f32,
    /// Else a box whose centre moved at most this fraction of the track's box size continues it
    /// (a fast walker at a low frame rate overlaps little from frame to frame).
    pub max_centre_shift: f32,
    /// A track unseen this long has left.
    pub lost_after: Duration,
}

impl TrackerConfig {
    pub fn new(lost_after: Duration) -> Self {
        Self {
            min_iou: 0.3,
            max_centre_shift: 0.5,
            lost_after,
        }
    }
}

#[derive(Debug, Clone)]
struct LiveTrack {
    id: TrackId,
    bbox: BBox,
    last_seen: Duration,
}

/// What one frame did to the tracks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackUpdate {
    /// The track of each box, in the order the boxes were given.
    pub assigned: Vec<TrackId>,
    /// Tracks that ended before this frame (unseen for `lost_after`).
    pub ended: Vec<TrackId>,
}

#[derive(Debug)]
pub struct FaceTracker {
    cfg: TrackerConfig,
    live: Vec<LiveTrack>,
    next_id: u64,
}

impl FaceTracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            live: Vec::new(),
            next_id: 1,
        }
    }

    /// Tracks currently in view (seen within `lost_after`).
    pub fn live(&self) -> impl Iterator<Item = TrackId> + '_ {
        self.live.iter().map(|t| t.id)
    }

    /// Link the face boxes of the frame taken at `at` to tracks.
    pub fn update(&mut self, at: Duration, boxes: &[BBox]) -> TrackUpdate {
        let lost_after = self.cfg.lost_after;
        let mut ended = Vec::new();
        self.live.retain(|t| {
            let keep = at.saturating_sub(t.last_seen) <= lost_after;
            if !keep {
                ended.push(t.id);
            }
            keep
        });

        // Every plausible (track, box) link with its strength; strongest first, ties by order.
        let mut links: Vec<(f32, usize, usize)> = Vec::new();
        for (ti, t) in self.live.iter().enumerate() {
            for (bi, b) in boxes.iter().enumerate() {
                if let Some(strength) = self.link_strength(&t.bbox, b) {
                    links.push((strength, ti, bi));
                }
            }
        }
        links.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));

        let mut assigned: Vec<Option<TrackId>> = vec![None; boxes.len()];
        let mut track_taken = vec![false; self.live.len()];
        for (_, ti, bi) in links {
            if track_taken[ti] || assigned[bi].is_some() {
                continue;
            }
            track_taken[ti] = true;
            assigned[bi] = Some(self.live[ti].id);
            self.live[ti].bbox = boxes[bi];
            self.live[ti].last_seen = at;
        }
        let assigned = assigned
            .into_iter()
            .zip(boxes)
            .map(|(id, b)| {
                id.unwrap_or_else(|| {
                    let id = TrackId(self.next_id);
                    self.next_id += 1;
                    self.live.push(LiveTrack {
                        id,
                        bbox: *b,
                        last_seen: at,
                    });
                    id
                })
            })
            .collect();
        TrackUpdate { assigned, ended }
    }

    /// How strongly box `b` continues a track last seen at `last`: above 1 for an overlap of at
    /// least `min_iou`, in (0, 1] for a small centre shift, None when it cannot be the same face.
    fn link_strength(&self, last: &BBox, b: &BBox) -> Option<f32> {
        let iou = last.iou(b);
        if iou >= self.cfg.min_iou {
            return Some(1.0 + iou);
        }
        let size = last.w.max(last.h).max(1.0);
        let (dx, dy) = (
            (last.x + last.w / 2.0) - (b.x + b.w / 2.0),
            (last.y + last.h / 2.0) - (b.y + b.h / 2.0),
        );
        let shift = (dx * dx + dy * dy).sqrt() / size;
        // Similar size too: a face twice as large in the same place is someone stepping in front.
        let scale = (b.w.max(b.h) / size).max(size / b.w.max(b.h).max(1.0));
        (shift <= self.cfg.max_centre_shift && scale <= 1.5)
            .then(|| 1.0 - shift / self.cfg.max_centre_shift * 0.999)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    fn bx(x: f32, y: f32) -> BBox {
        BBox {
            x,
            y,
            w: 100.0,
            h: 120.0,
        }
    }
    fn tracker() -> FaceTracker {
        FaceTracker::new(TrackerConfig::new(ms(2000)))
    }

    #[test]
    fn a_face_moving_slowly_keeps_its_track() {
        let mut t = tracker();
        let first = t.update(ms(0), &[bx(100.0, 100.0)]).assigned[0];
        for i in 1..50 {
            let u = t.update(ms(i * 100), &[bx(100.0 + i as f32 * 8.0, 100.0)]);
            assert_eq!(u.assigned, vec![first], "frame {i}");
        }
    }

    #[test]
    fn a_fast_walker_is_linked_by_its_centre() {
        let mut t = tracker();
        let first = t.update(ms(0), &[bx(100.0, 100.0)]).assigned[0];
        // 58 px in one frame: the boxes overlap by IoU 0.26 only; the centre moved 0.48 of the
        // box size, which links it.
        let u = t.update(ms(100), &[bx(158.0, 100.0)]);
        assert_eq!(u.assigned, vec![first]);
    }

    #[test]
    fn two_faces_are_two_tracks_and_keep_them_when_they_swap_order() {
        let mut t = tracker();
        let u = t.update(ms(0), &[bx(0.0, 0.0), bx(400.0, 0.0)]);
        let (left, right) = (u.assigned[0], u.assigned[1]);
        assert_ne!(left, right);
        // The detector lists them the other way round (it sorts by size).
        let u = t.update(ms(100), &[bx(405.0, 0.0), bx(5.0, 0.0)]);
        assert_eq!(u.assigned, vec![right, left]);
    }

    #[test]
    fn a_face_unseen_past_lost_after_ends_and_a_new_one_starts() {
        let mut t = tracker();
        let first = t.update(ms(0), &[bx(0.0, 0.0)]).assigned[0];
        // Frames without faces within lost_after keep the track.
        assert!(t.update(ms(1500), &[]).ended.is_empty());
        assert_eq!(t.update(ms(1900), &[bx(0.0, 0.0)]).assigned, vec![first]);
        let u = t.update(ms(4000), &[bx(0.0, 0.0)]);
        assert_eq!(u.ended, vec![first]);
        assert_ne!(u.assigned[0], first);
        assert_eq!(t.live().count(), 1);
    }

    #[test]
    fn a_far_or_much_larger_face_is_someone_else() {
        let mut t = tracker();
        let first = t.update(ms(0), &[bx(0.0, 0.0)]).assigned[0];
        let far = t.update(ms(100), &[bx(300.0, 0.0)]).assigned[0];
        assert_ne!(far, first);
        let big = BBox {
            x: -60.0,
            y: -60.0,
            w: 260.0,
            h: 300.0,
        };
        let u = t.update(ms(200), &[big]);
        assert_ne!(u.assigned[0], first);
        assert_ne!(u.assigned[0], far);
    }
}
