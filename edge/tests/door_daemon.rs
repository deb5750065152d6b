//! Door scenarios through the whole daemon: a recorded frame source played in real time, a
//! scripted recogniser, mock relay pins (ending with `.done()`), a real audit log.

use edge::audit::{verify_file, AuditLog};
use edge::daemon::{self, DaemonConfig, DaemonError, FaceRecognizer, RecognizeError, Shutdown};
use edge::door::{
    AccessPolicy, ActiveLevel, DoorController, DoorRelay, Observation, PersonRef, PolicyConfig,
};
use edge::frame::recorded::RecordedSource;
use edge::frame::{Frame, FrameError, FrameSource};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::MockError;
use image::{Rgb, RgbImage};
use shared::PersonId;
use std::time::Duration;

const FRAME_MS: u64 = 20;
const NO_FACE: u8 = 0;
const ALICE: u8 = 1;
const STRANGER: u8 = 200;

/// Reads who is in the picture from the red channel: 0 nobody, 1..=100 person N, else a stranger.
struct ColourCoded;

impl FaceRecognizer for ColourCoded {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        let code = frame.image.get_pixel(0, 0).0[0];
        Ok(match code {
            NO_FACE => vec![],
            1..=100 => {
                let person = PersonRef {
                    id: PersonId([code; 16]),
                    name: format!("person{code}"),
                };
                vec![Observation::known(person, 0.8)]
            }
            _ => vec![Observation::unknown(None, 0.2)],
        })
    }
}

/// Frames of `(code, count)` runs, FRAME_MS apart.
fn script(runs: &[(u8, usize)]) -> RecordedSource {
    let mut frames = Vec::new();
    for &(code, n) in runs {
        for _ in 0..n {
            let t = Duration::from_millis(frames.len() as u64 * FRAME_MS);
            frames.push((t, RgbImage::from_pixel(4, 4, Rgb([code, 0, 0]))));
        }
    }
    RecordedSource::from_images("script", frames).realtime(true)
}

fn policy() -> AccessPolicy {
    AccessPolicy::new(PolicyConfig {
        agree_frames: 3,
        agree_window_ms: 1000,
        leave_ms: 400,
        cooldown_ms: 500,
        lockout_after_unknowns: 3,
        unknown_window_ms: 60_000,
        lockout_ms: 60_000,
    })
}

fn daemon_cfg() -> DaemonConfig {
    DaemonConfig {
        status_interval_s: 1,
        max_frame_age_ms: 700,
        tick_ms: 5,
    }
}

fn audit_events(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn an_enrolled_person_unlocks_exactly_once_per_approach() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),  // start locked
        PinTx::set(State::High), // approach 1
        PinTx::set(State::Low),  // relock after 100 ms
        PinTx::set(State::High), // approach 2
        PinTx::set(State::Low),  // relock
        PinTx::set(State::Low),  // end of stream: fail-secure
        PinTx::set(State::Low),  // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_millis(100),
    );
    let source = script(&[
        (NO_FACE, 5),
        (ALICE, 40),
        (NO_FACE, 60),
        (ALICE, 40),
        (NO_FACE, 10),
    ]);
    let mut stamps = Stamps::default();
    let (mut parts, report) = daemon::run_observed(
        &daemon_cfg(),
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        &mut stamps,
    );
    let report = report.unwrap();
    parts.relay.done();
    // The observer sees what the audit log got, unlocks tied to the frame that decided them.
    let seen: Vec<_> = stamps.0.iter().map(|s| s.2).collect();
    assert_eq!(
        seen,
        ["started", "unlocked", "relocked", "unlocked", "relocked", "stopped"]
    );
    for (_, frame, kind) in &stamps.0 {
        assert_eq!(frame.is_some(), *kind == "unlocked", "{:?}", stamps.0);
    }
    assert_eq!(report.count("unlocked"), 2, "{report:?}");
    assert_eq!(report.count("relocked"), 2, "{report:?}");
    assert_eq!(report.count("denied"), 0);
    assert_eq!(report.stop_reason, "end of stream");
    assert_eq!(report.frames_captured, 155);
    let summary = verify_file(&audit_path).unwrap();
    assert_eq!(
        audit_events(&audit_path),
        ["started", "unlocked", "relocked", "unlocked", "relocked", "stopped"],
        "{summary:?}"
    );
}

#[test]
fn unknown_faces_never_unlock_and_repeated_ones_lock_out() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    // The relay is only ever driven to its locked level.
    let pin = PinMock::new(&[
        PinTx::set(State::High),
        PinTx::set(State::High),
        PinTx::set(State::High),
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::Low).unwrap(),
        policy(),
        Duration::from_millis(100),
    );
    let source = script(&[
        (STRANGER, 30),
        (NO_FACE, 60),
        (STRANGER, 30),
        (NO_FACE, 60),
        (STRANGER, 30),
        (NO_FACE, 60),
        (ALICE, 30), // locked out: refused
        (NO_FACE, 5),
    ]);
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    let report = report.unwrap();
    parts.relay.done();
    assert_eq!(report.count("unlocked"), 0, "{report:?}");
    assert_eq!(report.count("denied"), 3, "{report:?}");
    assert_eq!(report.count("refused"), 1, "{report:?}");
    verify_file(&audit_path).unwrap();
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert!(text.contains("\"lockout_for_ms\":60000"), "{text}");
}

/// Alice stands at the door forever: an endless source.
struct Endless {
    seq: u64,
}

impl FrameSource for Endless {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        std::thread::sleep(Duration::from_millis(10));
        self.seq += 1;
        let image = RgbImage::from_pixel(4, 4, Rgb([ALICE, 0, 0]));
        Ok(Some(Frame {
            image,
            captured_at: Duration::from_millis(self.seq * 10),
            seq: self.seq,
        }))
    }
    fn describe(&self) -> String {
        "endless".into()
    }
}

#[test]
fn shutdown_while_unlocked_locks_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let mut audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::High), // unlocked for 60 s...
        PinTx::set(State::Low),  // ...but the shutdown locks it
        PinTx::set(State::Low),  // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_secs(60),
    );
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        trigger.request();
    });
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        || Ok(Endless { seq: 0 }),
        ColourCoded,
        door,
        &mut audit,
        &shutdown,
    );
    stopper.join().unwrap();
    let report = report.unwrap();
    parts.relay.done();
    assert_eq!(report.stop_reason, "signal");
    assert_eq!(report.count("unlocked"), 1);
    assert_eq!(report.count("stopped"), 1);
}

#[test]
fn a_relay_fault_stops_the_daemon_with_the_door_locked() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::High).with_error(MockError::Io(std::io::ErrorKind::Other)),
        PinTx::set(State::Low), // controller: fail-secure
        PinTx::set(State::Low), // daemon: fault
        PinTx::set(State::Low), // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_secs(3),
    );
    let source = script(&[(ALICE, 20)]);
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    parts.relay.done();
    let err = report.unwrap_err();
    assert!(matches!(err, DaemonError::Door(_)), "{err}");
    assert_eq!(audit_events(&audit_path), ["started", "fault"]);
    verify_file(&audit_path).unwrap();
}

/// Alice's frames, then the camera dies.
struct DiesAfter {
    left: u32,
}

impl FrameSource for DiesAfter {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        std::thread::sleep(Duration::from_millis(FRAME_MS));
        if self.left == 0 {
            return Err(FrameError::Fatal {
                source_name: "test camera".into(),
                reason: "unplugged".into(),
            });
        }
        self.left -= 1;
        if self.left == 3 {
            return Err(FrameError::BadFrame {
                source_name: "test camera".into(),
                what: "#x".into(),
                reason: "torn".into(),
            });
        }
        let image = RgbImage::from_pixel(4, 4, Rgb([ALICE, 0, 0]));
        Ok(Some(Frame {
            image,
            captured_at: Duration::ZERO,
            seq: 0,
        }))
    }
    fn describe(&self) -> String {
        "dies".into()
    }
}

#[test]
fn a_camera_failure_while_unlocked_locks_the_door_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::High), // unlocked for 60 s
        PinTx::set(State::Low),  // camera fault: locked
        PinTx::set(State::Low),  // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_secs(60),
    );
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        || Ok(DiesAfter { left: 10 }),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    parts.relay.done();
    let err = report.unwrap_err();
    assert!(
        matches!(&err, DaemonError::Frame(e) if e.is_fatal()),
        "{err}"
    );
    assert!(err.to_string().contains("unplugged"), "{err}");
    assert_eq!(audit_events(&audit_path), ["started", "unlocked", "fault"]);
}

#[test]
fn a_camera_that_cannot_open_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::Low),
        PinTx::set(State::Low),
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_secs(1),
    );
    let open = || RecordedSource::open(std::path::Path::new("/nonexistent/recording"));
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        open,
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    parts.relay.done();
    let err = report.unwrap_err().to_string();
    assert!(err.contains("/nonexistent/recording"), "{err}");
}

/// A recogniser slower than the camera.
struct Slow;

impl FaceRecognizer for Slow {
    fn recognize(&mut self, _: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        std::thread::sleep(Duration::from_millis(60));
        Ok(vec![])
    }
}

#[test]
fn a_slow_recogniser_gets_fresh_frames_not_a_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::Low),
        PinTx::set(State::Low),
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_secs(1),
    );
    let source = script(&[(NO_FACE, 30)]); // 600 ms of frames every 20 ms
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        move || Ok(source),
        Slow,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    parts.relay.done();
    let report = report.unwrap();
    assert_eq!(report.frames_captured, 30);
    assert!(report.frames_dropped > 0, "{report:?}");
    assert!(report.frames_decided < 30, "{report:?}");
    assert_eq!(
        report.frames_decided + report.frames_dropped + report.frames_stale,
        30,
        "{report:?}"
    );
}

/// Records every door event with its stamp.
#[derive(Default)]
struct Stamps(Vec<(u64, Option<u64>, &'static str)>);

impl edge::daemon::DoorObserver for Stamps {
    fn on_event(&mut self, stamp: edge::daemon::EventStamp, event: &edge::door::DoorEvent) {
        self.0
            .push((stamp.at.as_millis() as u64, stamp.frame, event.kind()));
    }
}

#[test]
fn a_lockstep_replay_decides_every_frame_on_the_recording_clock() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),  // start locked
        PinTx::set(State::High), // alice, 3rd frame
        PinTx::set(State::Low),  // relock 100 ms later, on the recording's clock
        PinTx::set(State::Low),  // end of stream
        PinTx::set(State::Low),  // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_millis(100),
    );
    // Not paced: the whole recording is read as fast as the recogniser goes, and still every
    // frame is decided (a slow recogniser cannot make the replay drop any).
    let frames: Vec<_> = [
        NO_FACE, ALICE, ALICE, ALICE, NO_FACE, NO_FACE, NO_FACE, STRANGER, STRANGER, STRANGER,
    ]
    .iter()
    .enumerate()
    .map(|(k, &code)| {
        (
            Duration::from_millis(k as u64 * 40),
            RgbImage::from_pixel(4, 4, Rgb([code, 0, 0])),
        )
    })
    .collect();
    let source = RecordedSource::from_images("replay", frames);
    let mut stamps = Stamps::default();
    let (mut parts, report) = edge::replay::replay(
        move || Ok(source),
        SlowColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        &mut stamps,
    );
    parts.relay.done();
    let report = report.unwrap();
    assert_eq!(report.stop_reason, "end of stream");
    assert_eq!((report.frames_captured, report.frames_decided), (10, 10));
    assert_eq!(report.frames_dropped + report.frames_stale, 0);
    assert_eq!(
        stamps.0,
        [
            (0, None, "started"),
            (120, Some(3), "unlocked"),
            (240, None, "relocked"),
            (360, Some(9), "denied"),
            (360, None, "stopped"),
        ]
    );
    assert_eq!(
        audit_events(&audit_path),
        ["started", "unlocked", "relocked", "denied", "stopped"]
    );
    verify_file(&audit_path).unwrap();
}

/// [`ColourCoded`], but slower than the recording's frame rate.
struct SlowColourCoded;

impl FaceRecognizer for SlowColourCoded {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        std::thread::sleep(Duration::from_millis(60));
        ColourCoded.recognize(frame)
    }
}
