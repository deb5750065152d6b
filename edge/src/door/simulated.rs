//! A simulated door for `edge run --dry-run`: the relay is an in-memory pin whose transitions
//! are recorded, the contact and exit button are wired but never active.
//!
//! For installers commissioning a terminal before the lock is wired, and for demos: the whole
//! door loop runs (policy, controller, audit log) and the report shows when the lock would
//! have been released. Needs no GPIO, so it works in every build.

use super::{AccessPolicy, ActiveLevel, DoorConfig, DoorController, DoorRelay, RelayError};
use core::convert::Infallible;
use embedded_hal::digital::{ErrorType, InputPin, OutputPin, PinState};
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// One change of the relay line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayTransition {
    /// The new level: "high" or "low".
    #[serde(serialize_with = "level_name")]
    pub level: PinState,
    /// Whether the relay coil is now energised (lock released, with fail-secure wiring).
    pub energised: bool,
}

fn level_name<S: serde::Serializer>(level: &PinState, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match level {
        PinState::High => "high",
        PinState::Low => "low",
    })
}

/// The reading side of a [`SimulatedRelayPin`]: transitions not yet taken, oldest first.
#[derive(Debug, Clone, Default)]
pub struct RelayTap(Arc<Mutex<Vec<RelayTransition>>>);

impl RelayTap {
    /// The transitions since the last call.
    pub fn take(&self) -> Vec<RelayTransition> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An output pin that remembers its level and records each change of it.
#[derive(Debug)]
pub struct SimulatedRelayPin {
    level: Option<PinState>,
    active: ActiveLevel,
    tap: RelayTap,
}

impl SimulatedRelayPin {
    /// A pin driving a relay energised at `active`; read its transitions through the tap.
    pub fn new(active: ActiveLevel) -> (Self, RelayTap) {
        let tap = RelayTap::default();
        let pin = Self {
            level: None,
            active,
            tap: tap.clone(),
        };
        (pin, tap)
    }

    /// The level last driven (None before the first).
    pub fn level(&self) -> Option<PinState> {
        self.level
    }
}

impl ErrorType for SimulatedRelayPin {
    type Error = Infallible;
}

impl OutputPin for SimulatedRelayPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.set_state(PinState::Low)
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.set_state(PinState::High)
    }
    fn set_state(&mut self, level: PinState) -> Result<(), Infallible> {
        if self.level != Some(level) {
            self.level = Some(level);
            let energised = matches!(
                (self.active, level),
                (ActiveLevel::High, PinState::High) | (ActiveLevel::Low, PinState::Low)
            );
            let mut log = self.tap.0.lock().unwrap_or_else(|p| p.into_inner());
            log.push(RelayTransition { level, energised });
        }
        Ok(())
    }
}

/// An input that always reads its inactive level (door closed, exit button not pressed).
#[derive(Debug, Clone, Copy)]
pub struct IdleInput {
    active: ActiveLevel,
}

impl IdleInput {
    pub fn new(active: ActiveLevel) -> Self {
        Self { active }
    }
}

impl ErrorType for IdleInput {
    type Error = Infallible;
}

impl InputPin for IdleInput {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(self.active == ActiveLevel::Low)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(self.active == ActiveLevel::High)
    }
}

/// The door `[door]` describes, on simulated pins.
pub type SimulatedDoor = DoorController<SimulatedRelayPin, IdleInput, IdleInput>;

/// Build the controller from `[door]` (policy, unlock time, which inputs exist) on simulated
/// pins (door locked); the tap reports the relay's transitions.
pub fn door_controller(cfg: &DoorConfig) -> (SimulatedDoor, RelayTap) {
    let (pin, tap) = SimulatedRelayPin::new(cfg.relay.active);
    let relay = match DoorRelay::new(pin, cfg.relay.active) {
        Ok(relay) => relay,
        Err(RelayError::Pin(never)) => match never {},
    };
    let idle = |c: &super::InputConfig| (IdleInput::new(c.active), c.active);
    let door = DoorController::with_inputs(
        relay,
        AccessPolicy::new(cfg.policy.clone()),
        cfg.unlock_duration(),
        cfg.contact.as_ref().map(idle),
        cfg.exit_button.as_ref().map(idle),
    );
    (door, tap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::{DoorEvent, Observation, PersonRef};
    use shared::PersonId;
    use std::time::Duration;

    const DOOR: &str = r#"
        [relay]
        chip = "/dev/gpiochip0"
        line = 17
        active = "low"
        unlock_ms = 500
        [contact]
        chip = "/dev/gpiochip0"
        line = 22
        active = "high"
        [exit_button]
        chip = "/dev/gpiochip0"
        line = 27
        active = "low"
        [policy]
        agree_frames = 2
    "#;

    #[test]
    fn an_unlock_pulse_is_recorded_as_two_transitions_and_inputs_stay_idle() {
        let cfg: DoorConfig = toml::from_str(DOOR).unwrap();
        let (mut door, tap) = door_controller(&cfg);
        // Active low: locked is high.
        let start = tap.take();
        assert_eq!(
            start,
            [RelayTransition {
                level: PinState::High,
                energised: false
            }]
        );
        let alice = [Observation::known(
            PersonRef {
                id: PersonId([3; 16]),
                name: "alice".into(),
            },
            0.9,
        )];
        let ms = Duration::from_millis;
        assert!(door.tick(ms(0)).unwrap().is_empty(), "inputs are idle");
        door.on_frame(ms(0), &alice).unwrap();
        assert!(matches!(
            door.on_frame(ms(100), &alice).unwrap()[..],
            [DoorEvent::Unlocked { .. }]
        ));
        assert_eq!(
            tap.take(),
            [RelayTransition {
                level: PinState::Low,
                energised: true
            }]
        );
        assert!(door.tick(ms(599)).unwrap().is_empty());
        assert_eq!(door.tick(ms(600)).unwrap(), [DoorEvent::Relocked]);
        assert_eq!(
            tap.take(),
            [RelayTransition {
                level: PinState::High,
                energised: false
            }]
        );
        // Locking an already locked relay changes nothing on the line.
        let (parts, locked) = door.release();
        locked.unwrap();
        assert!(tap.take().is_empty());
        assert_eq!(parts.relay.level(), Some(PinState::High));
    }
}
