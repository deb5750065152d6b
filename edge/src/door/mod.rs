//! The door: what the terminal decides and how it drives the lock.
//!
//! - [`policy`]: pure access logic over recognition results (no I/O, no clock of its own).
//! - [`relay`]: the lock relay as an embedded-hal driver.
//! - [`controller`]: joins the policy, the relay and the optional door inputs; fail-secure.
//! - [`config`]: the `[door]` section of `edge.toml`.
//! - [`enroll_guide`]: live-enrollment guidance and the admin PIN check (pure functions).
//! - `gpio` (feature `gpio`): the pins from a Linux GPIO character device.
//! - [`simulated`]: in-memory pins for `edge run --dry-run`.

pub mod config;
pub mod controller;
pub mod enroll_guide;
#[cfg(feature = "gpio")]
pub mod gpio;
pub mod policy;
pub mod relay;
pub mod simulated;

pub use config::{ActiveLevel, DoorConfig, InputConfig, PolicyConfig, RelayConfig};
pub use controller::{DoorController, DoorError, DoorParts, NoPin};
pub use policy::AccessPolicy;
pub use relay::{DoorRelay, RelayError};

use crate::detect::BBox;
use crate::track::TrackId;
use serde::{Serialize, Serializer};
use shared::{Condition, PersonId};

/// Who a face was matched to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PersonRef {
    #[serde(serialize_with = "person_id_hex")]
    pub id: PersonId,
    pub name: String,
}

fn person_id_hex<S: Serializer>(id: &PersonId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// One face in one frame, as the recogniser saw it.
///
/// The recogniser reports only faces that passed its quality gate; `person` is the best gallery
/// candidate (if any) and `accepted` says whether `score` cleared the operating threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Where the face is in the frame (the policy follows faces by it).
    pub bbox: BBox,
    pub person: Option<PersonRef>,
    /// Cosine similarity to `person` (or the best candidate); 0 when the gallery is empty.
    pub score: f32,
    pub accepted: bool,
    /// Masked or unmasked, when the recogniser said (it chose the threshold by it).
    pub condition: Option<Condition>,
}

impl Observation {
    /// An accepted match.
    pub fn known(person: PersonRef, score: f32) -> Self {
        Self {
            bbox: Self::UNPLACED,
            person: Some(person),
            score,
            accepted: true,
            condition: None,
        }
    }

    /// A face that matched nobody well enough.
    pub fn unknown(best: Option<PersonRef>, score: f32) -> Self {
        Self {
            bbox: Self::UNPLACED,
            person: best,
            score,
            accepted: false,
            condition: None,
        }
    }

    /// The box of a face built without one: faces without their own box are one face in view.
    pub const UNPLACED: BBox = BBox {
        x: 0.0,
        y: 0.0,
        w: 100.0,
        h: 100.0,
    };

    /// The same observation, seen at `bbox`.
    pub fn at(mut self, bbox: BBox) -> Self {
        self.bbox = bbox;
        self
    }

    /// The same observation, judged under `condition`.
    pub fn with_condition(mut self, condition: Option<Condition>) -> Self {
        self.condition = condition;
        self
    }
}

/// Why a recognised person was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The terminal is locked out after repeated unknown faces.
    Lockout,
}

/// Everything the door does or notices; each one is a line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DoorEvent {
    /// A known person agreed over enough frames: the door was unlocked.
    Unlocked {
        /// The face's track: one per person in view.
        track: TrackId,
        person: PersonRef,
        score: f32,
        frames: u32,
        /// The condition of the best-scoring frame, when the recogniser reported one.
        #[serde(skip_serializing_if = "Option::is_none")]
        condition: Option<Condition>,
    },
    /// An unknown face held for enough frames (again every `deny_repeat_ms` while it stays);
    /// `lockout_for_ms` is set when this started a lockout.
    Denied {
        track: TrackId,
        best: Option<PersonRef>,
        score: f32,
        unknowns_in_window: u32,
        lockout_for_ms: Option<u64>,
    },
    /// A known person was recognised but not let in.
    Refused {
        track: TrackId,
        person: PersonRef,
        score: f32,
        reason: RefusalReason,
    },
    /// The unlock pulse ended and the relay was released.
    Relocked,
    /// The exit button asked for the door (egress is always allowed).
    ExitRequested,
    /// An admin released the lock through the API; `by` is their session and uid.
    RemoteUnlock {
        by: String,
    },
    /// The door contact opened; `forced` when the lock was not released at the time.
    DoorOpened {
        forced: bool,
    },
    DoorClosed,
    /// Something failed; the relay was released (door locked).
    Fault {
        what: String,
    },
    Started {
        version: String,
    },
    Stopped {
        reason: String,
    },
}

impl DoorEvent {
    /// Short name for status lines and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            DoorEvent::Unlocked { .. } => "unlocked",
            DoorEvent::Denied { .. } => "denied",
            DoorEvent::Refused { .. } => "refused",
            DoorEvent::Relocked => "relocked",
            DoorEvent::ExitRequested => "exit_requested",
            DoorEvent::RemoteUnlock { .. } => "remote_unlock",
            DoorEvent::DoorOpened { .. } => "door_opened",
            DoorEvent::DoorClosed => "door_closed",
            DoorEvent::Fault { .. } => "fault",
            DoorEvent::Started { .. } => "started",
            DoorEvent::Stopped { .. } => "stopped",
        }
    }
}
