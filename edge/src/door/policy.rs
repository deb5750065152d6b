//! The access policy: pure logic from recognition results to door events.
//!
//! No I/O and no clock: every call gets the time (monotonic, since the terminal started), so
//! the rules are tested on scripted sequences. The rules:
//! - a person unlocks after `agree_frames` frames agreeing on them within `agree_window_ms`;
//!   a frame showing someone else (or an unknown face) restarts the count;
//! - once a person caused an event they are latched until unseen for `leave_ms`: one unlock
//!   (or one denial) per approach, however long they stand there;
//! - no unlock within `cooldown_ms` of the previous one;
//! - unknown faces held for `agree_frames` frames are denied; `lockout_after_unknowns` denials
//!   within `unknown_window_ms` lock face unlocking out for `lockout_ms` (known people are then
//!   refused; the exit button still works).

use super::{DoorEvent, Observation, PersonRef, PolicyConfig, RefusalReason};
use shared::{Condition, PersonId};
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Known(PersonId),
    Unknown,
}

/// Consecutive agreeing frames on one subject.
#[derive(Debug)]
struct Track {
    subject: Subject,
    hits: VecDeque<Duration>,
    person: Option<PersonRef>,
    best_score: f32,
    /// Condition of the best-scoring frame.
    condition: Option<Condition>,
}

/// Access decisions over a stream of frames. See the module docs for the rules.
#[derive(Debug)]
pub struct AccessPolicy {
    cfg: PolicyConfig,
    track: Option<Track>,
    /// Subjects that already produced an event in their current approach, and when last seen.
    latched: Vec<(Subject, Duration)>,
    last_unlock: Option<Duration>,
    unknown_events: VecDeque<Duration>,
    lockout_until: Option<Duration>,
}

impl AccessPolicy {
    /// `cfg` should have passed [`PolicyConfig::validate`].
    pub fn new(cfg: PolicyConfig) -> Self {
        Self {
            cfg,
            track: None,
            latched: Vec::new(),
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

    /// Feed the faces of one frame taken at `at`; returns the event it caused, if any.
    pub fn observe(&mut self, at: Duration, faces: &[Observation]) -> Option<DoorEvent> {
        let leave = Duration::from_millis(self.cfg.leave_ms);
        self.latched
            .retain(|(_, seen)| at.saturating_sub(*seen) <= leave);
        if self.lockout_until.is_some_and(|until| at >= until) {
            self.lockout_until = None;
        }

        let (subject, person, score, condition) = frame_subject(faces)?;
        if let Some(entry) = self.latched.iter_mut().find(|(s, _)| *s == subject) {
            entry.1 = at;
            return None;
        }

        let window = self.cfg.agree_window();
        let track = match &mut self.track {
            Some(t) if t.subject == subject => t,
            slot => slot.insert(Track {
                subject,
                hits: VecDeque::new(),
                person: None,
                best_score: f32::NEG_INFINITY,
                condition: None,
            }),
        };
        track.hits.push_back(at);
        while track
            .hits
            .front()
            .is_some_and(|h| at.saturating_sub(*h) > window)
        {
            track.hits.pop_front();
        }
        if score > track.best_score {
            track.best_score = score;
            track.person = person;
            track.condition = condition;
        }
        let frames = track.hits.len() as u32;
        if frames < self.cfg.agree_frames {
            return None;
        }
        let best_score = track.best_score;
        let best_person = track.person.clone();
        let best_condition = track.condition;

        match subject {
            Subject::Known(_) => {
                let person = best_person?;
                if self.is_locked_out(at) {
                    self.settle(subject, at);
                    return Some(DoorEvent::Refused {
                        person,
                        score: best_score,
                        reason: RefusalReason::Lockout,
                    });
                }
                let cooldown = Duration::from_millis(self.cfg.cooldown_ms);
                if self
                    .last_unlock
                    .is_some_and(|t| at.saturating_sub(t) < cooldown)
                {
                    // Keep counting: the person is let in once the cooldown ends.
                    return None;
                }
                self.last_unlock = Some(at);
                self.settle(subject, at);
                Some(DoorEvent::Unlocked {
                    person,
                    score: best_score,
                    frames,
                    condition: best_condition,
                })
            }
            Subject::Unknown => {
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
                if count >= self.cfg.lockout_after_unknowns && !self.is_locked_out(at) {
                    self.lockout_until = Some(at + Duration::from_millis(self.cfg.lockout_ms));
                    lockout_for_ms = Some(self.cfg.lockout_ms);
                }
                self.settle(subject, at);
                Some(DoorEvent::Denied {
                    best: best_person,
                    score: best_score,
                    unknowns_in_window: count,
                    lockout_for_ms,
                })
            }
        }
    }

    /// The subject's approach produced its event: latch it and start a fresh count.
    fn settle(&mut self, subject: Subject, at: Duration) {
        self.latched.push((subject, at));
        self.track = None;
    }
}

/// What one frame votes for: subject, best candidate, score, condition.
type FrameVote = (Subject, Option<PersonRef>, f32, Option<Condition>);

/// The one subject a frame votes for: the best accepted match, else an unknown face, else none.
fn frame_subject(faces: &[Observation]) -> Option<FrameVote> {
    let best_known = faces
        .iter()
        .filter(|o| o.accepted)
        .filter_map(|o| o.person.as_ref().map(|p| (p, o)))
        .max_by(|a, b| a.1.score.total_cmp(&b.1.score));
    if let Some((p, o)) = best_known {
        return Some((Subject::Known(p.id), Some(p.clone()), o.score, o.condition));
    }
    let best_unknown = faces.iter().max_by(|a, b| a.score.total_cmp(&b.score))?;
    Some((
        Subject::Unknown,
        best_unknown.person.clone(),
        best_unknown.score,
        best_unknown.condition,
    ))
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
            .filter_map(|i| p.observe(ms(start_ms + i * 100), faces))
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
        assert_eq!(p.observe(ms(200), &a), None);
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
        assert_eq!(p.observe(ms(0), &plain), None);
        assert_eq!(p.observe(ms(100), &masked(0.8)), None);
        match p.observe(ms(200), &masked(0.7)) {
            Some(DoorEvent::Unlocked {
                score, condition, ..
            }) => assert_eq!((score, condition), (0.8, Some(Condition::Masked))),
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
            assert_eq!(p.observe(ms(10_000 + i * 600), &a), None);
        }
    }

    #[test]
    fn a_different_face_restarts_the_count() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        let b = [Observation::known(bob(), 0.7)];
        assert_eq!(p.observe(ms(0), &a), None);
        assert_eq!(p.observe(ms(100), &a), None);
        assert_eq!(p.observe(ms(200), &b), None);
        assert_eq!(p.observe(ms(300), &a), None);
        assert_eq!(p.observe(ms(400), &a), None);
        assert!(matches!(
            p.observe(ms(500), &a),
            Some(DoorEvent::Unlocked { .. })
        ));
    }

    #[test]
    fn frames_without_faces_neither_count_nor_break_the_count() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        assert_eq!(p.observe(ms(0), &a), None);
        assert_eq!(p.observe(ms(100), &[]), None);
        assert_eq!(p.observe(ms(200), &a), None);
        assert_eq!(p.observe(ms(300), &[]), None);
        assert!(matches!(
            p.observe(ms(400), &a),
            Some(DoorEvent::Unlocked { frames: 3, .. })
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
        assert_eq!(p.observe(ms(0), &strong), None);
        assert_eq!(p.observe(ms(100), &weak), None);
        assert_eq!(p.observe(ms(200), &strong), None);
        assert_eq!(p.observe(ms(300), &strong), None);
        assert!(p.observe(ms(400), &strong).is_some());
    }

    #[test]
    fn cooldown_delays_the_next_person() {
        let mut p = AccessPolicy::new(cfg());
        let a = [Observation::known(alice(), 0.7)];
        let b = [Observation::known(bob(), 0.8)];
        assert_eq!(run(&mut p, 0, 3, &a).len(), 1); // unlock at 200 ms
                                                    // Bob right behind: nothing until 3200 ms, then exactly one unlock.
        let events: Vec<_> = (0..40)
            .filter_map(|i| p.observe(ms(300 + i * 100), &b).map(|e| (i, e)))
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
    fn the_best_accepted_face_wins_a_crowded_frame() {
        let mut p = AccessPolicy::new(cfg());
        let crowd = [
            Observation::unknown(None, 0.1),
            Observation::known(alice(), 0.6),
            Observation::known(bob(), 0.8),
        ];
        let events = run(&mut p, 0, 3, &crowd);
        assert!(
            matches!(&events[..], [DoorEvent::Unlocked { person, .. }] if person.name == "bob")
        );
    }
}
