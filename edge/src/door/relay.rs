//! The lock relay, as an embedded-hal driver that owns its pin.
//!
//! Fail-secure wiring is assumed: a de-energised relay keeps the door locked, so "released"
//! (the safe state after any error, at start and at shutdown) means locked.

use super::ActiveLevel;
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{OutputPin, PinState};

/// A pin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError<E: core::fmt::Debug> {
    #[error("relay pin: {0:?}")]
    Pin(E),
}

/// The door-lock relay on one output pin.
pub struct DoorRelay<P> {
    pin: P,
    active: ActiveLevel,
    unlocked: bool,
}

impl<P: OutputPin> DoorRelay<P> {
    /// Take the pin and drive it to the locked level at once: whatever state the pin was left in,
    /// the door starts locked.
    pub fn new(pin: P, active: ActiveLevel) -> Result<Self, RelayError<P::Error>> {
        let mut relay = Self {
            pin,
            active,
            unlocked: true,
        };
        relay.lock()?;
        Ok(relay)
    }

    fn level(&self, energised: bool) -> PinState {
        match (self.active, energised) {
            (ActiveLevel::High, true) | (ActiveLevel::Low, false) => PinState::High,
            (ActiveLevel::High, false) | (ActiveLevel::Low, true) => PinState::Low,
        }
    }

    /// Energise the relay: the door opens.
    pub fn unlock(&mut self) -> Result<(), RelayError<P::Error>> {
        let level = self.level(true);
        self.pin.set_state(level).map_err(RelayError::Pin)?;
        self.unlocked = true;
        Ok(())
    }

    /// De-energise the relay: the door locks. Always drives the pin, even if it is believed
    /// locked already, so a glitch on the line is corrected.
    pub fn lock(&mut self) -> Result<(), RelayError<P::Error>> {
        let level = self.level(false);
        self.pin.set_state(level).map_err(RelayError::Pin)?;
        self.unlocked = false;
        Ok(())
    }

    /// Unlock for `ms` milliseconds, then lock; blocks. The lock is attempted even if unlocking
    /// failed half-way.
    pub fn pulse(&mut self, delay: &mut impl DelayNs, ms: u32) -> Result<(), RelayError<P::Error>> {
        if let Err(e) = self.unlock() {
            let _ = self.lock();
            return Err(e);
        }
        delay.delay_ms(ms);
        self.lock()
    }

    /// Whether the last successful command released the lock.
    pub fn is_unlocked(&self) -> bool {
        self.unlocked
    }

    /// Give the pin back, as it is now.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
    use embedded_hal_mock::eh1::MockError;

    #[test]
    fn active_high_pulse_drives_high_then_low() {
        let pin = PinMock::new(&[
            PinTx::set(State::Low), // new: locked
            PinTx::set(State::High),
            PinTx::set(State::Low),
        ]);
        let mut relay = DoorRelay::new(pin, ActiveLevel::High).unwrap();
        assert!(!relay.is_unlocked());
        relay.pulse(&mut NoopDelay::new(), 800).unwrap();
        assert!(!relay.is_unlocked());
        relay.release().done();
    }

    #[test]
    fn active_low_inverts_levels() {
        let pin = PinMock::new(&[
            PinTx::set(State::High), // new: locked
            PinTx::set(State::Low),  // unlock
            PinTx::set(State::High), // lock
        ]);
        let mut relay = DoorRelay::new(pin, ActiveLevel::Low).unwrap();
        relay.unlock().unwrap();
        assert!(relay.is_unlocked());
        relay.lock().unwrap();
        relay.release().done();
    }

    #[test]
    fn failed_unlock_still_tries_to_lock() {
        let pin = PinMock::new(&[
            PinTx::set(State::Low),
            PinTx::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)),
            PinTx::set(State::Low),
        ]);
        let mut relay = DoorRelay::new(pin, ActiveLevel::High).unwrap();
        let err = relay.pulse(&mut NoopDelay::new(), 500).unwrap_err();
        assert!(err.to_string().contains("relay pin"), "{err}");
        assert!(!relay.is_unlocked());
        relay.release().done();
    }
}
