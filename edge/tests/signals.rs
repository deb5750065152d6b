//! SIGTERM stops the daemon gracefully, with the relay released. Its own test binary, since
//! installing the handlers changes the whole process.

use edge::audit::{verify_file, AuditLog};
use edge::daemon::{
    self, DaemonConfig, DoorObserver, EventStamp, FaceRecognizer, RecognizeError, Shutdown,
};
use edge::door::{
    AccessPolicy, ActiveLevel, DoorController, DoorEvent, DoorRelay, Observation, PersonRef,
    PolicyConfig,
};
use edge::frame::{Frame, FrameError, FrameSource};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use image::RgbImage;
use shared::PersonId;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Far above what any machine needs; reached only when something hangs.
const PATIENCE: Duration = Duration::from_secs(60);

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

/// On the first unlock, has another thread raise SIGTERM and holds the deciding thread until
/// the handler has set the flag: the signal is certain to arrive while the door is open, on a
/// fast machine or under qemu alike.
struct SigtermWhenUnlocked {
    shutdown: Shutdown,
    /// Taken by the first unlock; tells the watchdog the signal went out.
    raised: Option<mpsc::Sender<()>>,
    kinds: Vec<&'static str>,
}

impl DoorObserver for SigtermWhenUnlocked {
    fn on_event(&mut self, _: EventStamp, event: &DoorEvent) {
        self.kinds.push(event.kind());
        if event.kind() != "unlocked" {
            return;
        }
        let Some(raised) = self.raised.take() else {
            return;
        };
        std::thread::spawn(|| signal_hook::low_level::raise(signal_hook::consts::SIGTERM))
            .join()
            .unwrap()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while !self.shutdown.is_requested() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = raised.send(());
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
    // Should the door never unlock, stop the run anyway (the asserts then say so).
    let (raised, heard) = mpsc::channel();
    let watchdog = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            if heard.recv_timeout(PATIENCE) == Err(mpsc::RecvTimeoutError::Timeout) {
                shutdown.request();
            }
        })
    };
    let mut observer = SigtermWhenUnlocked {
        shutdown: shutdown.clone(),
        raised: Some(raised),
        kinds: Vec::new(),
    };
    let cfg = DaemonConfig {
        status_interval_s: 0,
        ..DaemonConfig::default()
    };
    let (mut parts, report) = daemon::run_observed(
        &cfg,
        || Ok(Camera),
        AlwaysAlice,
        door,
        &mut audit,
        &shutdown,
        &mut observer,
    );
    let kinds = std::mem::take(&mut observer.kinds);
    drop(observer); // wakes the watchdog if it is still waiting
    watchdog.join().unwrap();
    parts.relay.done();
    let report = report.unwrap();
    assert_eq!(report.stop_reason, "signal");
    assert_eq!(kinds, ["started", "unlocked", "stopped"]);
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
