//! SIGTERM stops the daemon gracefully, with the relay released. Its own test binary, since
//! installing the handlers changes the whole process.

use edge::audit::{verify_file, AuditLog};
use edge::daemon::{self, DaemonConfig, FaceRecognizer, RecognizeError, Shutdown};
use edge::door::{
    AccessPolicy, ActiveLevel, DoorController, DoorRelay, Observation, PersonRef, PolicyConfig,
};
use edge::frame::{Frame, FrameError, FrameSource};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use image::RgbImage;
use shared::PersonId;
use std::time::Duration;

struct Camera;

impl FrameSource for Camera {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        std::thread::sleep(Duration::from_millis(10));
        Ok(Some(Frame {
            image: RgbImage::new(2, 2),
            captured_at: Duration::ZERO,
            seq: 0,
        }))
    }
    fn describe(&self) -> String {
        "test camera".into()
    }
}

struct AlwaysAlice;

impl FaceRecognizer for AlwaysAlice {
    fn recognize(&mut self, _: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        Ok(vec![Observation::known(
            PersonRef {
                id: PersonId([9; 16]),
                name: "alice".into(),
            },
            0.9,
        )])
    }
}

#[test]
fn sigterm_stops_the_daemon_and_locks_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::High), // alice: unlocked for 60 s
        PinTx::set(State::Low),  // SIGTERM: locked
        PinTx::set(State::Low),  // release
    ]);
    let policy = AccessPolicy::new(PolicyConfig {
        agree_frames: 2,
        ..PolicyConfig::default()
    });
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy,
        Duration::from_secs(60),
    );
    let shutdown = Shutdown::on_signals().unwrap();
    let killer = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(500));
        signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    });
    let cfg = DaemonConfig {
        status_interval_s: 0,
        ..DaemonConfig::default()
    };
    let (mut parts, report) = daemon::run(
        &cfg,
        || Ok(Camera),
        AlwaysAlice,
        door,
        &mut audit,
        &shutdown,
    );
    killer.join().unwrap();
    parts.relay.done();
    let report = report.unwrap();
    assert_eq!(report.stop_reason, "signal");
    assert_eq!(report.count("unlocked"), 1);
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert!(
        text.lines()
            .last()
            .unwrap()
            .contains("\"reason\":\"signal\""),
        "{text}"
    );
    verify_file(&audit_path).unwrap();
}
