//! The door controller: the policy's events drive the relay; the door inputs are polled.
//!
//! Fail-secure: any pin error locks the door (best effort) before it is reported, and
//! [`DoorController::release`] locks before handing the pins back.

use super::policy::AccessPolicy;
use super::relay::DoorRelay;
use super::{ActiveLevel, DoorEvent, Observation};
use core::convert::Infallible;
use embedded_hal::digital::{ErrorType, InputPin, OutputPin};
use std::time::Duration;

/// A pin failed; the door was locked (as far as the relay still obeys).
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error("relay pin failed: {0}")]
    Relay(String),
    #[error("door contact pin failed: {0}")]
    Contact(String),
    #[error("exit button pin failed: {0}")]
    ExitButton(String),
}

/// The placeholder for an input that is not wired.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPin;

impl ErrorType for NoPin {
    type Error = Infallible;
}

impl InputPin for NoPin {
    fn is_high(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
    fn is_low(&mut self) -> Result<bool, Infallible> {
        Ok(true)
    }
}

/// An input pin with the level that means "active" (door open, button pressed).
struct InputLine<P> {
    pin: P,
    active: ActiveLevel,
}

impl<P: InputPin> InputLine<P> {
    fn is_active(&mut self) -> Result<bool, P::Error> {
        match self.active {
            ActiveLevel::High => self.pin.is_high(),
            ActiveLevel::Low => self.pin.is_low(),
        }
    }
}

/// The pins handed back by [`DoorController::release`].
pub struct DoorParts<R, C, B> {
    pub relay: R,
    pub contact: Option<C>,
    pub exit_button: Option<B>,
}

/// Policy + relay + optional door contact and exit button.
pub struct DoorController<R, C = NoPin, B = NoPin> {
    relay: DoorRelay<R>,
    contact: Option<InputLine<C>>,
    exit_button: Option<InputLine<B>>,
    policy: AccessPolicy,
    unlock_for: Duration,
    relock_at: Option<Duration>,
    door_open: Option<bool>,
    button_down: bool,
}

impl<R: OutputPin> DoorController<R> {
    /// A controller with no inputs; each unlock lasts `unlock_for`.
    pub fn new(relay: DoorRelay<R>, policy: AccessPolicy, unlock_for: Duration) -> Self {
        Self {
            relay,
            contact: None,
            exit_button: None,
            policy,
            unlock_for,
            relock_at: None,
            door_open: None,
            button_down: false,
        }
    }
}

impl<R: OutputPin, C: InputPin, B: InputPin> DoorController<R, C, B> {
    /// A controller whose inputs may or may not be wired (as read from a config).
    pub fn with_inputs(
        relay: DoorRelay<R>,
        policy: AccessPolicy,
        unlock_for: Duration,
        contact: Option<(C, ActiveLevel)>,
        exit_button: Option<(B, ActiveLevel)>,
    ) -> Self {
        Self {
            relay,
            contact: contact.map(|(pin, active)| InputLine { pin, active }),
            exit_button: exit_button.map(|(pin, active)| InputLine { pin, active }),
            policy,
            unlock_for,
            relock_at: None,
            door_open: None,
            button_down: false,
        }
    }

    /// Add the door contact (active = door open).
    pub fn with_contact<C2: InputPin>(
        self,
        pin: C2,
        active: ActiveLevel,
    ) -> DoorController<R, C2, B> {
        DoorController {
            relay: self.relay,
            contact: Some(InputLine { pin, active }),
            exit_button: self.exit_button,
            policy: self.policy,
            unlock_for: self.unlock_for,
            relock_at: self.relock_at,
            door_open: None,
            button_down: self.button_down,
        }
    }

    /// Add the request-to-exit button (active = pressed).
    pub fn with_exit_button<B2: InputPin>(
        self,
        pin: B2,
        active: ActiveLevel,
    ) -> DoorController<R, C, B2> {
        DoorController {
            relay: self.relay,
            contact: self.contact,
            exit_button: Some(InputLine { pin, active }),
            policy: self.policy,
            unlock_for: self.unlock_for,
            relock_at: self.relock_at,
            door_open: self.door_open,
            button_down: false,
        }
    }

    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }

    pub fn is_unlocked(&self) -> bool {
        self.relay.is_unlocked()
    }

    /// The faces of one frame taken at `at`; unlocks the door when the policy says so.
    pub fn on_frame(
        &mut self,
        at: Duration,
        faces: &[Observation],
    ) -> Result<Vec<DoorEvent>, DoorError> {
        let events = self.policy.observe(at, faces);
        if events
            .iter()
            .any(|e| matches!(e, DoorEvent::Unlocked { .. }))
        {
            self.open(at)?;
        }
        Ok(events)
    }

    /// Time passes: relock after the pulse, poll the exit button and the door contact.
    pub fn tick(&mut self, at: Duration) -> Result<Vec<DoorEvent>, DoorError> {
        let mut events = Vec::new();
        if self.relock_at.is_some_and(|t| at >= t) {
            self.relock_at = None;
            self.relay
                .lock()
                .map_err(|e| self.fail(DoorError::Relay(format!("{e:?}"))))?;
            events.push(DoorEvent::Relocked);
        }
        if let Some(button) = &mut self.exit_button {
            let pressed = button.is_active().map_err(|e| format!("{e:?}"));
            let pressed = pressed.map_err(|e| self.fail(DoorError::ExitButton(e)))?;
            if pressed && !self.button_down {
                self.open(at)?;
                events.push(DoorEvent::ExitRequested);
            }
            self.button_down = pressed;
        }
        if let Some(contact) = &mut self.contact {
            let open = contact.is_active().map_err(|e| format!("{e:?}"));
            let open = open.map_err(|e| self.fail(DoorError::Contact(e)))?;
            match (self.door_open, open) {
                (Some(false), true) | (None, true) => events.push(DoorEvent::DoorOpened {
                    forced: !self.relay.is_unlocked(),
                }),
                (Some(true), false) => events.push(DoorEvent::DoorClosed),
                _ => {}
            }
            self.door_open = Some(open);
        }
        Ok(events)
    }

    /// An admin's remote unlock (`by` names them): one pulse, as for a recognised person.
    pub fn remote_unlock(&mut self, at: Duration, by: String) -> Result<DoorEvent, DoorError> {
        self.open(at)?;
        Ok(DoorEvent::RemoteUnlock { by })
    }

    /// Lock now, whatever the policy says (used on every error path).
    pub fn fail_secure(&mut self) -> Result<(), DoorError> {
        self.relock_at = None;
        self.relay
            .lock()
            .map_err(|e| DoorError::Relay(format!("{e:?}")))
    }

    /// Lock, then give the pins back. The result says whether locking worked.
    pub fn release(mut self) -> (DoorParts<R, C, B>, Result<(), DoorError>) {
        let locked = self.fail_secure();
        let parts = DoorParts {
            relay: self.relay.release(),
            contact: self.contact.map(|c| c.pin),
            exit_button: self.exit_button.map(|b| b.pin),
        };
        (parts, locked)
    }

    fn open(&mut self, at: Duration) -> Result<(), DoorError> {
        if let Err(e) = self.relay.unlock() {
            return Err(self.fail(DoorError::Relay(format!("{e:?}"))));
        }
        self.relock_at = Some(at + self.unlock_for);
        Ok(())
    }

    /// Lock after `err` (best effort; a relay that failed may fail again) and pass `err` on.
    fn fail(&mut self, err: DoorError) -> DoorError {
        if let Err(again) = self.fail_secure() {
            tracing::error!("could not lock the door after \"{err}\": {again}");
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::{PersonRef, PolicyConfig};
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
    use embedded_hal_mock::eh1::MockError;
    use shared::PersonId;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn alice() -> [Observation; 1] {
        [Observation::known(
            PersonRef {
                id: PersonId([7; 16]),
                name: "alice".into(),
            },
            0.8,
        )]
    }

    fn policy() -> AccessPolicy {
        AccessPolicy::new(PolicyConfig {
            agree_frames: 2,
            ..PolicyConfig::default()
        })
    }

    #[test]
    fn unlock_pulse_then_relock_on_tick() {
        let pin = PinMock::new(&[
            PinTx::set(State::Low),  // new
            PinTx::set(State::High), // unlock
            PinTx::set(State::Low),  // relock after 1 s
            PinTx::set(State::Low),  // release
        ]);
        let relay = DoorRelay::new(pin, ActiveLevel::High).unwrap();
        let mut door = DoorController::new(relay, policy(), ms(1000));
        assert_eq!(door.on_frame(ms(0), &alice()).unwrap(), vec![]);
        assert!(matches!(
            door.on_frame(ms(100), &alice()).unwrap()[..],
            [DoorEvent::Unlocked { .. }]
        ));
        assert!(door.is_unlocked());
        assert!(door.tick(ms(1099)).unwrap().is_empty());
        assert_eq!(door.tick(ms(1100)).unwrap(), vec![DoorEvent::Relocked]);
        assert!(!door.is_unlocked());
        let (mut parts, locked) = door.release();
        locked.unwrap();
        parts.relay.done();
    }

    #[test]
    fn exit_button_opens_on_press_edge_and_contact_reports_forced_entry() {
        let relay_pin = PinMock::new(&[
            PinTx::set(State::High), // new (active low: high = locked)
            PinTx::set(State::Low),  // exit press
            PinTx::set(State::High), // relock
            PinTx::set(State::High), // release
        ]);
        let button = PinMock::new(&[
            PinTx::get(State::High), // t=0 idle (active low)
            PinTx::get(State::Low),  // t=100 pressed
            PinTx::get(State::Low),  // t=200 still held: no second request
            PinTx::get(State::High), // t=3200 released
            PinTx::get(State::High), // t=3300
        ]);
        let contact = PinMock::new(&[
            PinTx::get(State::Low),  // closed
            PinTx::get(State::High), // opened while unlocked
            PinTx::get(State::Low),  // closed
            PinTx::get(State::Low),
            PinTx::get(State::High), // opened while locked: forced
        ]);
        let relay = DoorRelay::new(relay_pin, ActiveLevel::Low).unwrap();
        let mut door = DoorController::new(relay, policy(), ms(3000))
            .with_exit_button(button, ActiveLevel::Low)
            .with_contact(contact, ActiveLevel::High);
        assert!(door.tick(ms(0)).unwrap().is_empty());
        assert_eq!(
            door.tick(ms(100)).unwrap(),
            vec![
                DoorEvent::ExitRequested,
                DoorEvent::DoorOpened { forced: false }
            ]
        );
        assert_eq!(door.tick(ms(200)).unwrap(), vec![DoorEvent::DoorClosed]);
        assert_eq!(door.tick(ms(3200)).unwrap(), vec![DoorEvent::Relocked]);
        assert_eq!(
            door.tick(ms(3300)).unwrap(),
            vec![DoorEvent::DoorOpened { forced: true }]
        );
        let (mut parts, locked) = door.release();
        locked.unwrap();
        parts.relay.done();
        parts.exit_button.unwrap().done();
        parts.contact.unwrap().done();
    }

    #[test]
    fn a_failing_input_locks_the_door() {
        let relay_pin = PinMock::new(&[
            PinTx::set(State::Low),  // new
            PinTx::set(State::High), // face unlock
            PinTx::set(State::Low),  // fail-secure after the contact error
            PinTx::set(State::Low),  // release
        ]);
        let contact = PinMock::new(&[
            PinTx::get(State::Low).with_error(MockError::Io(std::io::ErrorKind::BrokenPipe))
        ]);
        let relay = DoorRelay::new(relay_pin, ActiveLevel::High).unwrap();
        let mut door =
            DoorController::new(relay, policy(), ms(3000)).with_contact(contact, ActiveLevel::High);
        door.on_frame(ms(0), &alice()).unwrap();
        door.on_frame(ms(100), &alice()).unwrap();
        assert!(door.is_unlocked());
        let err = door.tick(ms(200)).unwrap_err();
        assert!(matches!(err, DoorError::Contact(_)), "{err}");
        assert!(!door.is_unlocked(), "fail-secure: locked after the error");
        let (mut parts, locked) = door.release();
        locked.unwrap();
        parts.relay.done();
        parts.contact.unwrap().done();
    }

    #[test]
    fn a_failing_relay_is_reported_and_retried_locked() {
        let relay_pin = PinMock::new(&[
            PinTx::set(State::Low),
            PinTx::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)),
            PinTx::set(State::Low), // fail-secure
            PinTx::set(State::Low), // release
        ]);
        let relay = DoorRelay::new(relay_pin, ActiveLevel::High).unwrap();
        let mut door = DoorController::new(relay, policy(), ms(3000));
        door.on_frame(ms(0), &alice()).unwrap();
        let err = door.on_frame(ms(100), &alice()).unwrap_err();
        assert!(matches!(err, DoorError::Relay(_)), "{err}");
        assert!(!door.is_unlocked());
        let (mut parts, locked) = door.release();
        locked.unwrap();
        parts.relay.done();
    }
}
