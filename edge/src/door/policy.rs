//! The access policy: pure logic from recognition results to door events.
//!
//! No I/O and no clock: every call gets the time (monotonic, since the terminal started), so
//! the rules are tested on scripted sequences. Faces are followed as tracks ([`crate::track`]),
//! and every rule is per track, so two people in view are judged apart:
//! - a track unlocks after `agree_frames` consecutive frames on one enrolled person within
//!   `agree_window_ms`; a frame of the track that disagrees (an unknown face, or someone else)
//!   restarts its count, so sporadic false matches never add up to an unlock;
//! - one unlock per approach: a track that opened the door does not open it again for the same
//!   person, nor does that person on another track until unseen for `leave_ms`;
//! - no unlock within `cooldown_ms` of the previous one (the track keeps counting, and is let
//!   in when the cooldown ends);
//! - a track held on unknown faces for `agree_frames` frames is denied, and denied again every
//!   `deny_repeat_ms` while it stays in view; `lockout_after_unknowns` denials within
//!   `unknown_window_ms` lock face unlocking out for `lockout_ms`, and denials during a lockout
//!   extend it (known people are refused; the exit button still works).

use super::{DoorEvent, Observation, PersonRef, PolicyConfig, RefusalReason};
use crate::track::{FaceTracker, TrackId, TrackerConfig};
use shared::{Condition, PersonId};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vote {
    Known(PersonId),
    Unknown,
}

/// Consecutive frames of one track that agree on one vote.
#[derive(Debug)]
struct Streak {
    vote: Vote,
    hits: VecDeque<Duration>,
    /// The best-scoring frame's candidate, score and condition.
    person: Option<PersonRef>,
    best_score: f32,
    condition: Option<Condition>,
}

impl Streak {
    fn new(vote: Vote) -> Self {
        Self {
            vote,
            hits: VecDeque::new(),
            person: None,
            best_score: f32::NEG_INFINITY,
            condition: None,
        }
    }

    /// Add a frame at `at`; frames older than `window` drop out. Returns the frames counted.
    fn push(&mut self, at: Duration, window: Duration, face: &Observation) -> u32 {
        self.hits.push_back(at);
        while self
            .hits
            .front()
            .is_some_and(|h| at.saturating_sub(*h) > window)
        {
            self.hits.pop_front();
        }
        if face.score > self.best_score {
            self.best_score = face.score;
            self.person = face.person.clone();
            self.condition = face.condition;
        }
        self.hits.len() as u32
    }
}

/// What the policy remembers of one track.
#[derive(Debug)]
struct TrackState {
    streak: Option<Streak>,
    /// Whom the track was last answered for (let in, refused, denied). Another answer needs a
    /// streak on someone else: a stranger stepping into the place of someone just let in is a
    /// new subject, and is denied.
    answered: Option<Vote>,
    /// When the track was last denied as a stranger.
    last_denied: Option<Duration>,
}

/// Access decisions over a stream of frames. See the module docs for the rules.
#[derive(Debug)]
pub struct AccessPolicy {
    cfg: PolicyConfig,
    tracker: FaceTracker,
    tracks: BTreeMap<TrackId, TrackState>,
    /// People let in during their current approach, and when they were last seen.
    admitted: Vec<(PersonId, Duration)>,
    last_unlock: Option<Duration>,
    unknown_events: VecDeque<Duration>,
    lockout_until: Option<Duration>,
}

impl AccessPolicy {
    /// `cfg` should have passed [`PolicyConfig::validate`].
    pub fn new(cfg: PolicyConfig) -> Self {
        let tracker = FaceTracker::new(TrackerConfig::new(Duration::from_millis(cfg.leave_ms)));
        Self {
            cfg,
            tracker,
            tracks: BTreeMap::new(),
            admitted: Vec::new(),
            last_unlock: None,
            unknown_events: VecDeque::new(),
            lockout_until: None,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Whether face unlocking is locked out at `at`.
    pub fn is_locked_out(&self, at: Duration) -> bool {
        self.lockout_until.is_some_and(|until| at < until)
    }

    /// Tracks in view.
    pub fn tracks_in_view(&self) -> usize {
        self.tracks.len()
    }

    /// Feed the faces of one frame taken at `at`; returns the events it caused, one per track
    /// at most, in face order.
    pub fn observe(&mut self, at: Duration, faces: &[Observation]) -> Vec<DoorEvent> {
        let leave = Duration::from_millis(self.cfg.leave_ms);
        self.admitted
            .retain(|(_, seen)| at.saturating_sub(*seen) <= leave);
        if self.lockout_until.is_some_and(|until| at >= until) {
            self.lockout_until = None;
        }
        let boxes: Vec<_> = faces.iter().map(|f| f.bbox).collect();
        let update = self.tracker.update(at, &boxes);
        for ended in &update.ended {
            self.tracks.remove(ended);
        }
        // The strongest accepted faces first, so that when two tracks complete on the same
        // frame the better match takes the door and the other waits out the cooldown.
        let mut order: Vec<usize> = (0..faces.len()).collect();
        order.sort_by(|&a, &b| {
            (faces[b].accepted, faces[b].score)
                .partial_cmp(&(faces[a].accepted, faces[a].score))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        let mut events: Vec<(usize, DoorEvent)> = order
            .into_iter()
            .filter_map(|i| {
                self.observe_track(at, update.assigned[i], &faces[i])
                    .map(|e| (i, e))
            })
            .collect();
        events.sort_by_key(|(i, _)| *i);
        events.into_iter().map(|(_, e)| e).collect()
    }

    fn observe_track(
        &mut self,
        at: Duration,
        track: TrackId,
        face: &Observation,
    ) -> Option<DoorEvent> {
        let vote = match (&face.person, face.accepted) {
            (Some(p), true) => Vote::Known(p.id),
            _ => Vote::Unknown,
        };
        if let Vote::Known(id) = vote {
            if let Some(entry) = self.admitted.iter_mut().find(|(p, _)| *p == id) {
                entry.1 = at;
            }
        }
        let window = self.cfg.agree_window();
        let locked_out = self.is_locked_out(at);
        let state = self.tracks.entry(track).or_insert(TrackState {
            streak: None,
            answered: None,
            last_denied: None,
        });
        let streak = match &mut state.streak {
            Some(s) if s.vote == vote => s,
            slot => slot.insert(Streak::new(vote)),
        };
        let frames = streak.push(at, window, face);
        if frames < self.cfg.agree_frames {
            return None;
        }
        let (person, score, condition) =
            (streak.person.clone(), streak.best_score, streak.condition);

        match vote {
            Vote::Known(id) => {
                let person = person?;
                if state.answered == Some(vote) {
                    return None;
                }
                if self.admitted.iter().any(|(p, _)| *p == id) {
                    // Let in on another track moments ago: the same approach.
                    state.answered = Some(vote);
                    return None;
                }
                if locked_out {
                    state.answered = Some(vote);
                    return Some(DoorEvent::Refused {
                        track,
                        person,
                        score,
                        reason: RefusalReason::Lockout,
                    });
                }
                let cooldown = Duration::from_millis(self.cfg.cooldown_ms);
                if self
                    .last_unlock
                    .is_some_and(|t| at.saturating_sub(t) < cooldown)
                {
                    // Keep counting: the track is let in once the cooldown ends.
                    return None;
                }
                state.answered = Some(vote);
                self.last_unlock = Some(at);
                self.admitted.push((id, at));
                Some(DoorEvent::Unlocked {
                    track,
                    person,
                    score,
                    frames,
                    condition,
                })
            }
            Vote::Unknown => {
                let repeat = Duration::from_millis(self.cfg.deny_repeat_ms);
                if state
                    .last_denied
                    .is_some_and(|t| at.saturating_sub(t) < repeat)
                {
                    return None;
                }
                state.last_denied = Some(at);
                state.answered = Some(vote);
                let unknown_window = Duration::from_millis(self.cfg.unknown_window_ms);
                self.unknown_events.push_back(at);
                while self
                    .unknown_events
                    .front()
                    .is_some_and(|t| at.saturating_sub(*t) > unknown_window)
                {
                    self.unknown_events.pop_front();
                }
                let count = self.unknown_events.len() as u32;
                let mut lockout_for_ms = None;
                if count >= self.cfg.lockout_after_unknowns {
                    if !locked_out {
                        lockout_for_ms = Some(self.cfg.lockout_ms);
                    }
                    // A stranger who stays keeps the door locked out.
                    self.lockout_until = Some(at + Duration::from_millis(self.cfg.lockout_ms));
                }
                Some(DoorEvent::Denied {
                    track,
                    best: person,
                    score,
                    unknowns_in_window: count,
                    lockout_for_ms,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> PersonRef {
        PersonRef {
            id: PersonId([1; 16]),
            name: "alice".into(),
        }
    }
    fn bob() -> PersonRef {
        PersonRef {
            id: PersonId([2; 16]),
            name: "bob".into(),
        }
    }
    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
    fn cfg() -> PolicyConfig {
        PolicyConfig {
            agree_frames: 3,
            agree_window_ms: 1000,
            leave_ms: 1500,
            cooldown_ms: 3000,
            deny_repeat_ms: 10_000,
            lockout_after_unknowns: 2,
            unknown_window_ms: 30_000,
            lockout_ms: 60_000,
        }
    }

    /// Feed `frames` frames 100 ms apart from `start_ms`; collect the events.
    fn run(
        p: &mut AccessPolicy,
        start_ms: u64,
        frames: u64,
        faces: &[Observation],
    ) -> Vec<DoorEvent> {
        (0..frames)
            .flat_map(|i| p.observe(ms(start_ms + i * 100), faces))
            .collect()
    }

    #[test]
    fn known_person_unlocks_once_per_approach() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        // 10 s standing in front: one unlock, on the third frame.
        let events = run(&mut p, 0, 100, &a);
        assert_eq!(events.len(), 1, "{events:?}");
        assert!(
            matches!(&events[0], DoorEvent::Unlocked { person, frames: 3, .. } if person.name == "alice")
        );
        assert!(p.observe(ms(200), &a).is_empty());
        // Gone for 2 s (> leave_ms), then back: a new approach unlocks again.
        let events = run(&mut p, 12_000, 5, &a);
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn the_unlock_carries_the_condition_of_its_best_frame() {
        let mut p = AccessPolicy::new(cfg());
        let masked =
            |score| [Observation::known(alice(), score).with_condition(Some(Condition::Masked))];
        let plain = [Observation::known(alice(), 0.6).with_condition(Some(Condition::Unmasked))];
        assert!(p.observe(ms(0), &plain).is_empty());
        assert!(p.observe(ms(100), &masked(0.8)).is_empty());
        match &p.observe(ms(200), &masked(0.7))[..] {
            [DoorEvent::Unlocked {
                score, condition, ..
            }] => assert_eq!((*score, *condition), (0.8, Some(Condition::Masked))),
            e => panic!("expected an unlock, got {e:?}"),
        }
    }

    #[test]
    fn too_few_or_too_spread_frames_do_not_unlock() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        assert!(run(&mut p, 0, 2, &a).is_empty());
        // Frames 600 ms apart: never three within 1000 ms.
        for i in 0..10 {
            assert!(p.observe(ms(10_000 + i * 600), &a).is_empty());
        }
    }

    #[test]
    fn a_different_face_restarts_the_count() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        let b = [Observation::known(bob(), 0.7)];
        assert!(p.observe(ms(0), &a).is_empty());
        assert!(p.observe(ms(100), &a).is_empty());
        assert!(p.observe(ms(200), &b).is_empty());
        assert!(p.observe(ms(300), &a).is_empty());
        assert!(p.observe(ms(400), &a).is_empty());
        assert!(matches!(
            p.observe(ms(500), &a)[..],
            [DoorEvent::Unlocked { .. }]
        ));
    }

    #[test]
    fn frames_without_faces_neither_count_nor_break_the_count() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        assert!(p.observe(ms(0), &a).is_empty());
        assert!(p.observe(ms(100), &[]).is_empty());
        assert!(p.observe(ms(200), &a).is_empty());
        assert!(p.observe(ms(300), &[]).is_empty());
        assert!(matches!(
            p.observe(ms(400), &a)[..],
            [DoorEvent::Unlocked { frames: 3, .. }]
        ));
    }

    #[test]
    fn unknown_face_never_unlocks_and_is_denied_once_per_approach() {
        let mut p = AccessPolicy::new(cfg());
        let stranger = [Observation::unknown(Some(alice()), 0.2)];
        let events = run(&mut p, 0, 50, &stranger);
        assert_eq!(events.len(), 1, "{events:?}");
        match &events[0] {
            DoorEvent::Denied {
                best,
                unknowns_in_window: 1,
                lockout_for_ms: None,
                ..
            } => {
                assert_eq!(best.as_ref().map(|b| b.name.as_str()), Some("alice"))
            }
            e => panic!("expected a denial, got {e:?}"),
        }
    }

    #[test]
    fn below_threshold_candidate_does_not_count_for_that_person() {
        let mut p = AccessPolicy::new(cfg());
        let weak = [Observation::unknown(Some(alice()), 0.3)];
        let strong = [Observation::known(alice(), 0.7)];
        assert!(p.observe(ms(0), &strong).is_empty());
        assert!(p.observe(ms(100), &weak).is_empty());
        assert!(p.observe(ms(200), &strong).is_empty());
        assert!(p.observe(ms(300), &strong).is_empty());
        assert!(!p.observe(ms(400), &strong).is_empty());
    }

    #[test]
    fn cooldown_delays_the_next_person() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        let b = [Observation::known(bob(), 0.8)];
        assert_eq!(run(&mut p, 0, 3, &a).len(), 1); // unlock at 200 ms
                                                    // Bob right behind: nothing until 3200 ms, then exactly one unlock.
        let events: Vec<_> = (0..40)
            .flat_map(|i| {
                p.observe(ms(300 + i * 100), &b)
                    .into_iter()
                    .map(move |e| (i, e))
            })
            .collect();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(
            events[0].0,
            29,
            "unlocked at {} ms",
            300 + events[0].0 * 100
        );
        assert!(matches!(&events[0].1, DoorEvent::Unlocked { person, .. } if person.name == "bob"));
    }

    #[test]
    fn repeated_unknowns_lock_out_known_faces() {
        let mut p = AccessPolicy::new(cfg());
        let stranger = [Observation::unknown(None, 0.1)];
        let a = [Observation::known(alice(), 0.9)];
        let first = run(&mut p, 0, 5, &stranger);
        assert!(matches!(
            first[..],
            [DoorEvent::Denied {
                lockout_for_ms: None,
                ..
            }]
        ));
        // The stranger walks away and comes back: second denial starts the lockout.
        let second = run(&mut p, 5_000, 5, &stranger);
        assert!(
            matches!(
                second[..],
                [DoorEvent::Denied {
                    unknowns_in_window: 2,
                    lockout_for_ms: Some(60_000),
                    ..
                }]
            ),
            "{second:?}"
        );
        assert!(p.is_locked_out(ms(6_000)));
        // Alice is refused, once, during the lockout.
        let during = run(&mut p, 10_000, 30, &a);
        assert!(
            matches!(
                during[..],
                [DoorEvent::Refused {
                    reason: RefusalReason::Lockout,
                    ..
                }]
            ),
            "{during:?}"
        );
        // After the lockout she gets in again.
        assert!(!p.is_locked_out(ms(70_000)));
        let after = run(&mut p, 70_000, 3, &a);
        assert!(
            matches!(after[..], [DoorEvent::Unlocked { .. }]),
            "{after:?}"
        );
    }

    #[test]
    fn unknowns_spread_beyond_the_window_do_not_lock_out() {
        let mut p = AccessPolicy::new(cfg());
        let stranger = [Observation::unknown(None, 0.1)];
        run(&mut p, 0, 3, &stranger);
        let later = run(&mut p, 40_000, 3, &stranger);
        assert!(matches!(
            later[..],
            [DoorEvent::Denied {
                unknowns_in_window: 1,
                lockout_for_ms: None,
                ..
            }]
        ));
        assert!(!p.is_locked_out(ms(40_500)));
    }

    #[test]
    fn in_a_crowd_the_best_match_takes_the_door_and_the_stranger_is_denied() {
        let mut p = AccessPolicy::new(cfg());
        let crowd = [
            Observation::unknown(None, 0.1),
            Observation::known(alice(), 0.6),
            Observation::known(bob(), 0.8),
        ];
        let events = run(&mut p, 0, 3, &crowd);
        // Three faces, three tracks; Alice waits out the cooldown behind Bob.
        assert!(
            matches!(
                &events[..],
                [DoorEvent::Denied { .. }, DoorEvent::Unlocked { person, .. }] if person.name == "bob"
            ),
            "{events:?}"
        );
    }

    fn at(o: Observation, x: f32) -> Observation {
        o.at(crate::BBox {
            x,
            y: 100.0,
            w: 120.0,
            h: 140.0,
        })
    }

    /// A stranger stands in view for 10 minutes at 10 fps; 2 % of the frames falsely match
    /// Alice, in bursts of up to `agree_frames - 1` (the worst case short of a full streak).
    #[test]
    fn a_stranger_in_view_with_sporadic_false_matches_never_unlocks_and_is_locked_out() {
        let cfg = PolicyConfig::default();
        let mut p = AccessPolicy::new(cfg.clone());
        let (mut unlocks, mut denials, mut lockouts) = (0, 0, 0);
        let mut false_matches = 0;
        for i in 0..6000u64 {
            // Frame i falsely matches when it falls in a burst: bursts of 2 every 100 frames.
            let burst = i % 100 < u64::from(cfg.agree_frames - 1);
            let face = if burst {
                false_matches += 1;
                Observation::known(alice(), 0.45)
            } else {
                Observation::unknown(Some(alice()), 0.2)
            };
            for e in p.observe(ms(i * 100), &[at(face, 200.0)]) {
                match e {
                    DoorEvent::Unlocked { .. } => unlocks += 1,
                    DoorEvent::Denied { lockout_for_ms, .. } => {
                        denials += 1;
                        lockouts += lockout_for_ms.is_some() as u32;
                    }
                    e => panic!("unexpected {e:?}"),
                }
            }
        }
        assert_eq!(false_matches, 120, "2 % of 6000 frames");
        assert_eq!(unlocks, 0);
        // Denied again every deny_repeat_ms while in view: about 600 s / 5 s.
        assert!((100..=121).contains(&denials), "{denials} denials");
        assert_eq!(
            lockouts, 1,
            "the lockout starts once and is extended while they stay"
        );
        assert!(p.is_locked_out(ms(600_000)));
        assert_eq!(p.tracks_in_view(), 1, "one stranger, one track");
    }

    #[test]
    fn unknown_frames_between_matches_restart_the_count() {
        let mut p = AccessPolicy::new(cfg());
        let a = Observation::known(alice(), 0.7);
        let u = Observation::unknown(Some(alice()), 0.3);
        // A, A, U, A, A, U, ...: never three agreeing frames in a row.
        for i in 0..60u64 {
            let face = if i % 3 == 2 { u.clone() } else { a.clone() };
            let events = p.observe(ms(i * 100), &[face]);
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, DoorEvent::Unlocked { .. })),
                "frame {i}: {events:?}"
            );
        }
    }

    #[test]
    fn an_enrolled_person_beside_a_stranger_gets_one_unlock_and_the_stranger_is_denied() {
        let mut p = AccessPolicy::new(PolicyConfig::default());
        let mut events = Vec::new();
        // The stranger stands still at the left; Alice walks in from the right, 10 px a frame.
        for i in 0..40u64 {
            let stranger = at(Observation::unknown(Some(bob()), 0.1), 100.0);
            let alice_face = at(Observation::known(alice(), 0.7), 900.0 - i as f32 * 10.0);
            events.extend(p.observe(ms(i * 100), &[alice_face, stranger]));
        }
        let unlocked: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                DoorEvent::Unlocked { track, person, .. } => Some((*track, person.name.clone())),
                _ => None,
            })
            .collect();
        let denied: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                DoorEvent::Denied { track, .. } => Some(*track),
                _ => None,
            })
            .collect();
        assert_eq!(unlocked.len(), 1, "{events:?}");
        assert_eq!(unlocked[0].1, "alice");
        assert!(
            !denied.is_empty(),
            "the stranger's denial is recorded: {events:?}"
        );
        assert!(
            denied.iter().all(|t| *t != unlocked[0].0),
            "two people, two tracks"
        );
        assert_eq!(p.tracks_in_view(), 2);
    }

    #[test]
    fn a_stranger_who_stays_is_denied_again_every_deny_repeat_ms() {
        let mut p = AccessPolicy::new(PolicyConfig {
            deny_repeat_ms: 5000,
            lockout_after_unknowns: 10,
            ..cfg()
        });
        let stranger = [Observation::unknown(None, 0.1)];
        let denied_at: Vec<u64> = (0..200u64)
            .filter(|i| !p.observe(ms(i * 100), &stranger).is_empty())
            .map(|i| i * 100)
            .collect();
        assert_eq!(denied_at, [200, 5200, 10_200, 15_200]);
    }

    #[test]
    fn a_track_that_breaks_does_not_let_the_same_person_in_twice() {
        let mut p = AccessPolicy::new(cfg());
        let first = run(&mut p, 0, 3, &[at(Observation::known(alice(), 0.7), 0.0)]);
        assert!(matches!(first[..], [DoorEvent::Unlocked { .. }]));
        // The detector loses her and finds her far off (a new track) within leave_ms.
        let again = run(
            &mut p,
            300,
            10,
            &[at(Observation::known(alice(), 0.7), 800.0)],
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_stranger_stepping_into_the_place_of_someone_let_in_is_denied() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        let stranger = [Observation::unknown(None, 0.1)];
        assert!(matches!(
            run(&mut p, 0, 3, &a)[..],
            [DoorEvent::Unlocked { .. }]
        ));
        let tailgate = run(&mut p, 300, 3, &stranger);
        assert!(
            matches!(tailgate[..], [DoorEvent::Denied { .. }]),
            "{tailgate:?}"
        );
    }
}
