//! The door's pins on a Linux GPIO character device (`/dev/gpiochipN`), from `[door]`.

use super::{AccessPolicy, ActiveLevel, DoorConfig, DoorController, DoorRelay, InputConfig};
use embedded_hal::digital::PinState;
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;
use std::path::{Path, PathBuf};

/// The consumer label shown by `gpioinfo` for our lines.
const CONSUMER: &str = "maskgate-edge";

/// The door on GPIO lines: relay, and the contact and exit button when configured.
pub type GpioDoor = DoorController<CdevPin, CdevPin, CdevPin>;

/// Open every line `[door]` names and build the controller (door locked).
pub fn door_controller(cfg: &DoorConfig) -> Result<GpioDoor, GpioError> {
    let pin = relay_pin(cfg)?;
    let relay = DoorRelay::new(pin, cfg.relay.active).map_err(|e| GpioError {
        role: "door.relay",
        chip: cfg.relay.chip.clone(),
        line: cfg.relay.line,
        problem: e.to_string(),
    })?;
    let contact = cfg
        .contact
        .as_ref()
        .map(|c| Ok::<_, GpioError>((input_pin("door.contact", c)?, c.active)));
    let exit = cfg
        .exit_button
        .as_ref()
        .map(|c| Ok::<_, GpioError>((input_pin("door.exit_button", c)?, c.active)));
    Ok(DoorController::with_inputs(
        relay,
        AccessPolicy::new(cfg.policy.clone()),
        cfg.unlock_duration(),
        contact.transpose()?,
        exit.transpose()?,
    ))
}

/// A GPIO line could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("[{role}] {} line {line}: {problem}", chip.display())]
pub struct GpioError {
    pub role: &'static str,
    pub chip: PathBuf,
    pub line: u32,
    pub problem: String,
}

/// The relay line as an output, driven to the locked level at request time so the door never
/// glitches open while the daemon starts.
pub fn relay_pin(cfg: &DoorConfig) -> Result<CdevPin, GpioError> {
    let r = &cfg.relay;
    let locked = match r.active {
        ActiveLevel::High => PinState::Low,
        ActiveLevel::Low => PinState::High,
    };
    let value = u8::from(locked == PinState::High);
    request(
        "door.relay",
        &r.chip,
        r.line,
        LineRequestFlags::OUTPUT,
        value,
    )
}

/// An input line (door contact, exit button).
pub fn input_pin(role: &'static str, cfg: &InputConfig) -> Result<CdevPin, GpioError> {
    request(role, &cfg.chip, cfg.line, LineRequestFlags::INPUT, 0)
}

fn request(
    role: &'static str,
    chip: &Path,
    line: u32,
    flags: LineRequestFlags,
    value: u8,
) -> Result<CdevPin, GpioError> {
    let err = |e: linux_embedded_hal::gpio_cdev::Error| GpioError {
        role,
        chip: chip.to_path_buf(),
        line,
        problem: e.to_string(),
    };
    let mut c = Chip::new(chip).map_err(err)?;
    let handle = c
        .get_line(line)
        .map_err(err)?
        .request(flags, value, CONSUMER)
        .map_err(err)?;
    CdevPin::new(handle).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_chip_is_named() {
        let cfg: DoorConfig = toml::from_str(
            "[relay]\nchip = \"/dev/gpiochip-maskgate-absent\"\nline = 4\nactive = \"high\"\n",
        )
        .unwrap();
        let err = relay_pin(&cfg).err().expect("no such chip").to_string();
        assert!(
            err.contains("/dev/gpiochip-maskgate-absent line 4"),
            "{err}"
        );
    }
}
