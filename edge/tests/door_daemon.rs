//! Door scenarios through the whole daemon: a scripted camera, a scripted recogniser, mock
//! relay pins (ending with `.done()`), a real audit log.
//!
//! The scenarios run in [`Lockstep`]: the daemon's clock is the script's, and the camera hands
//! over each frame only once the daemon is done with the previous one. The door's windows
//! (agree, leave, cooldown, relock) then follow the script exactly, so a loaded machine, qemu or
//! a slow fsync of the audit log makes a run take longer but never decide differently. Where
//! something must happen at a moment (a shutdown while the door is open), the test waits for
//! that moment instead of sleeping for it.

use edge::audit::{verify_file, AuditLog};
use edge::daemon::{
    self, Clock, DaemonConfig, DaemonError, DoorObserver, EventStamp, FaceRecognizer,
    RecognizeError, Shutdown,
};
use edge::door::{
    AccessPolicy, ActiveLevel, DoorController, DoorEvent, DoorRelay, Observation, PersonRef,
    PolicyConfig,
};
use edge::frame::recorded::RecordedSource;
use edge::frame::{Frame, FrameError, FrameSource};
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::MockError;
use image::{Rgb, RgbImage};
use shared::PersonId;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

const FRAME_MS: u64 = 20;
const NO_FACE: u8 = 0;
const ALICE: u8 = 1;
const STRANGER: u8 = 200;

/// How long a test waits for the daemon before giving up: far above what any machine needs
/// (a run normally takes milliseconds), reached only when something hangs.
const PATIENCE: Duration = Duration::from_secs(60);

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

fn picture(code: u8) -> RgbImage {
    RgbImage::from_pixel(4, 4, Rgb([code, 0, 0]))
}

/// The codes of `(code, count)` runs, one per frame.
fn runs(script: &[(u8, usize)]) -> Vec<u8> {
    script
        .iter()
        .flat_map(|&(code, n)| std::iter::repeat_n(code, n))
        .collect()
}

/// An event as the observer saw it: ms on the daemon's clock, deciding frame, kind.
type Stamp = (u64, Option<u64>, &'static str);

/// The test's clock and the camera's pace, shared by the camera (capture thread), the daemon
/// (as its [`Clock`]) and the observer (deciding thread).
#[derive(Clone, Default)]
struct Lockstep(Arc<(Mutex<Progress>, Condvar)>);

#[derive(Default)]
struct Progress {
    now: Duration,
    handed_over: u64,
    done: u64,
    events: Vec<Stamp>,
    /// The daemon recorded its last event ("stopped" or "fault").
    ended: bool,
}

impl Lockstep {
    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.0 .0.lock().unwrap()
    }

    fn changed(&self) {
        self.0 .1.notify_all();
    }

    /// Wait until the daemon is done with every frame handed over: true, or false when it has
    /// ended instead. An error (failing the run) if it takes longer than [`PATIENCE`].
    fn wait_until_done(&self) -> Result<bool, FrameError> {
        let deadline = Instant::now() + PATIENCE;
        let mut p = self.progress();
        while p.done < p.handed_over && !p.ended {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FrameError::Fatal {
                    source_name: "lockstep camera".into(),
                    reason: format!("frame {} not decided within {PATIENCE:?}", p.done),
                });
            }
            p = self.0 .1.wait_timeout(p, left).unwrap().0;
        }
        Ok(!p.ended)
    }

    /// Frame `seq`, showing `code`, is taken now: the clock moves to its time.
    fn hand_over(&self, seq: u64, code: u8) -> Frame {
        let at = Duration::from_millis(seq * FRAME_MS);
        let mut p = self.progress();
        p.now = at;
        p.handed_over += 1;
        Frame {
            image: picture(code),
            captured_at: at,
            seq,
        }
    }

    fn events(&self) -> Vec<Stamp> {
        self.progress().events.clone()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.2).collect()
    }

    fn has_seen(&self, kind: &str) -> bool {
        self.progress().events.iter().any(|e| e.2 == kind)
    }
}

impl Clock for Lockstep {
    fn now(&self) -> Duration {
        self.progress().now
    }
}

impl DoorObserver for Lockstep {
    fn on_event(&mut self, stamp: EventStamp, event: &DoorEvent) {
        let mut p = self.progress();
        p.events
            .push((stamp.at.as_millis() as u64, stamp.frame, event.kind()));
        p.ended |= matches!(event, DoorEvent::Stopped { .. } | DoorEvent::Fault { .. });
        drop(p);
        self.changed();
    }

    fn on_frame_done(&mut self, _seq: u64, _decided: bool) {
        self.progress().done += 1;
        self.changed();
    }
}

/// A camera in lockstep with the daemon: frame `seq` shows `codes[seq]` at `seq * FRAME_MS`
/// (`None`: the stream ends) and is handed over once the daemon is done with the one before.
struct Scripted<F> {
    lockstep: Lockstep,
    next: u64,
    codes: F,
}

impl<F: FnMut(u64) -> Option<u8>> FrameSource for Scripted<F> {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if !self.lockstep.wait_until_done()? {
            return Ok(None);
        }
        let Some(code) = (self.codes)(self.next) else {
            return Ok(None);
        };
        let frame = self.lockstep.hand_over(self.next, code);
        self.next += 1;
        Ok(Some(frame))
    }
    fn describe(&self) -> String {
        "scripted camera".into()
    }
}

fn scripted(lockstep: &Lockstep, codes: Vec<u8>) -> Scripted<impl FnMut(u64) -> Option<u8>> {
    Scripted {
        lockstep: lockstep.clone(),
        next: 0,
        codes: move |seq| codes.get(seq as usize).copied(),
    }
}

/// Alice stands at the door for as long as the daemon runs.
fn alice_forever(lockstep: &Lockstep) -> Scripted<impl FnMut(u64) -> Option<u8>> {
    Scripted {
        lockstep: lockstep.clone(),
        next: 0,
        codes: |_| Some(ALICE),
    }
}

/// The threaded daemon on the lockstep clock, with the lockstep as its observer.
fn run_lockstep<S, F, R, Rec>(
    lockstep: &Lockstep,
    open_source: F,
    recognizer: Rec,
    door: DoorController<R>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: Option<&mut dyn DoorObserver>,
) -> (
    edge::door::DoorParts<R, edge::door::NoPin, edge::door::NoPin>,
    Result<daemon::DaemonReport, DaemonError>,
)
where
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError> + Send + 'static,
    R: embedded_hal::digital::OutputPin,
    Rec: FaceRecognizer + 'static,
{
    let mut own = lockstep.clone();
    daemon::run_clocked(
        &daemon_cfg(),
        Arc::new(lockstep.clone()),
        open_source,
        recognizer,
        door,
        audit,
        shutdown,
        observer.unwrap_or(&mut own),
    )
}

fn policy() -> AccessPolicy {
    AccessPolicy::new(PolicyConfig {
        agree_frames: 3,
        agree_window_ms: 1000,
        leave_ms: 400,
        cooldown_ms: 500,
        deny_repeat_ms: 5000,
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
    // Alice stays 800 ms (longer than the cooldown: only the latch stops a second unlock),
    // leaves for 1200 ms (longer than leave_ms) and comes back.
    let lockstep = Lockstep::default();
    let source = scripted(
        &lockstep,
        runs(&[
            (NO_FACE, 5),
            (ALICE, 40),
            (NO_FACE, 60),
            (ALICE, 40),
            (NO_FACE, 10),
        ]),
    );
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        None,
    );
    let report = report.unwrap();
    parts.relay.done();
    // Each unlock on the third agreeing frame, tied to it; each relock 100 ms later.
    assert_eq!(
        lockstep.events(),
        [
            (0, None, "started"),
            (140, Some(7), "unlocked"),
            (240, None, "relocked"),
            (2140, Some(107), "unlocked"),
            (2240, None, "relocked"),
            (3080, None, "stopped"),
        ]
    );
    assert_eq!(report.count("unlocked"), 2, "{report:?}");
    assert_eq!(report.count("relocked"), 2, "{report:?}");
    assert_eq!(report.count("denied"), 0);
    assert_eq!(report.stop_reason, "end of stream");
    assert_eq!((report.frames_captured, report.frames_decided), (155, 155));
    assert_eq!(report.frames_dropped + report.frames_stale, 0, "{report:?}");
    let summary = verify_file(&audit_path).unwrap();
    assert_eq!(
        audit_events(&audit_path),
        ["started", "unlocked", "relocked", "unlocked", "relocked", "stopped"],
        "{summary:?}"
    );
}

/// Two faces per frame from one code: bit 7 a stranger standing at the left, the low bits
/// person N walking in on the right (0 nobody), 8 px nearer the door each frame.
struct TwoInView;

const STRANGER_LEFT: u8 = 0x80;

impl FaceRecognizer for TwoInView {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        let code = frame.image.get_pixel(0, 0).0[0];
        let mut faces = Vec::new();
        let person = code & 0x7f;
        if person != 0 {
            let walked = frame.seq as f32 * 8.0;
            faces.push(
                Observation::known(
                    PersonRef {
                        id: PersonId([person; 16]),
                        name: format!("person{person}"),
                    },
                    0.8,
                )
                .at(edge::BBox {
                    x: 900.0 - walked,
                    y: 100.0,
                    w: 120.0,
                    h: 140.0,
                }),
            );
        }
        if code & STRANGER_LEFT != 0 {
            faces.push(Observation::unknown(None, 0.2).at(edge::BBox {
                x: 50.0,
                y: 100.0,
                w: 120.0,
                h: 140.0,
            }));
        }
        Ok(faces)
    }
}

#[test]
fn an_enrolled_person_beside_a_stranger_is_let_in_once_and_the_stranger_denied() {
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.jsonl");
    let mut audit = AuditLog::open(&audit_path).unwrap();
    let pin = PinMock::new(&[
        PinTx::set(State::Low),  // start locked
        PinTx::set(State::High), // Alice
        PinTx::set(State::Low),  // relock after 100 ms
        PinTx::set(State::Low),  // end of stream: fail-secure
        PinTx::set(State::Low),  // release
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_millis(100),
    );
    let lockstep = Lockstep::default();
    let source = scripted(
        &lockstep,
        runs(&[
            (STRANGER_LEFT, 5),
            (STRANGER_LEFT | ALICE, 40),
            (NO_FACE, 5),
        ]),
    );
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        TwoInView,
        door,
        &mut audit,
        &Shutdown::new(),
        None,
    );
    let report = report.unwrap();
    parts.relay.done();
    assert_eq!((report.count("unlocked"), report.count("denied")), (1, 1));
    assert_eq!(
        lockstep.events(),
        [
            (0, None, "started"),
            (40, Some(2), "denied"),
            (140, Some(7), "unlocked"),
            (240, None, "relocked"),
            (980, None, "stopped"),
        ]
    );
    verify_file(&audit_path).unwrap();
    let text = std::fs::read_to_string(&audit_path).unwrap();
    let track_of = |kind: &str| {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["data"]["event"] == kind)
            .map(|v| v["data"]["track"].as_u64().unwrap())
            .unwrap()
    };
    assert_ne!(track_of("denied"), track_of("unlocked"), "{text}");
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
    let lockstep = Lockstep::default();
    let source = scripted(
        &lockstep,
        runs(&[
            (STRANGER, 30),
            (NO_FACE, 60),
            (STRANGER, 30),
            (NO_FACE, 60),
            (STRANGER, 30),
            (NO_FACE, 60),
            (ALICE, 30), // locked out: refused
            (NO_FACE, 5),
        ]),
    );
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        None,
    );
    let report = report.unwrap();
    parts.relay.done();
    // One denial per approach, on its third frame; the third denial starts the lockout.
    assert_eq!(
        lockstep.events(),
        [
            (0, None, "started"),
            (40, Some(2), "denied"),
            (1840, Some(92), "denied"),
            (3640, Some(182), "denied"),
            (5440, Some(272), "refused"),
            (6080, None, "stopped"),
        ]
    );
    assert_eq!(report.count("unlocked"), 0, "{report:?}");
    assert_eq!(report.count("denied"), 3, "{report:?}");
    assert_eq!(report.count("refused"), 1, "{report:?}");
    verify_file(&audit_path).unwrap();
    let text = std::fs::read_to_string(&audit_path).unwrap();
    assert_eq!(
        text.matches("\"lockout_for_ms\":60000").count(),
        1,
        "{text}"
    );
}

/// Passes events on to the lockstep; on the first unlock it tells another thread, which
/// requests the shutdown, and holds the deciding thread until the request is there, so the
/// stop is certain to arrive while the door is open.
struct StopWhenUnlocked {
    lockstep: Lockstep,
    unlocked: mpsc::Sender<()>,
    shutdown: Shutdown,
}

impl DoorObserver for StopWhenUnlocked {
    fn on_event(&mut self, stamp: EventStamp, event: &DoorEvent) {
        self.lockstep.on_event(stamp, event);
        if event.kind() == "unlocked" && self.unlocked.send(()).is_ok() {
            let deadline = Instant::now() + PATIENCE;
            while !self.shutdown.is_requested() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    fn on_frame_done(&mut self, seq: u64, decided: bool) {
        self.lockstep.on_frame_done(seq, decided);
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
    let (tell, unlocked) = mpsc::channel();
    let trigger = shutdown.clone();
    let stopper = std::thread::spawn(move || {
        let heard = unlocked.recv_timeout(PATIENCE).is_ok();
        trigger.request(); // without an unlock too: the asserts below then say what went wrong
        heard
    });
    let lockstep = Lockstep::default();
    let source = alice_forever(&lockstep);
    let mut observer = StopWhenUnlocked {
        lockstep: lockstep.clone(),
        unlocked: tell,
        shutdown: shutdown.clone(),
    };
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &shutdown,
        Some(&mut observer),
    );
    assert!(stopper.join().unwrap(), "the door never unlocked");
    let report = report.unwrap();
    parts.relay.done();
    assert_eq!(report.stop_reason, "signal");
    assert_eq!(lockstep.kinds(), ["started", "unlocked", "stopped"]);
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
    let lockstep = Lockstep::default();
    let source = alice_forever(&lockstep);
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        None,
    );
    parts.relay.done();
    let err = report.unwrap_err();
    assert!(matches!(err, DaemonError::Door(_)), "{err}");
    assert_eq!(
        lockstep.events(),
        [(0, None, "started"), (40, Some(2), "fault")]
    );
    assert_eq!(audit_events(&audit_path), ["started", "fault"]);
    verify_file(&audit_path).unwrap();
}

/// Alice at the door until it opens; then a torn frame, then the camera dies.
struct DiesWhenUnlocked {
    lockstep: Lockstep,
    next: u64,
    torn: bool,
}

impl FrameSource for DiesWhenUnlocked {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if !self.lockstep.wait_until_done()? {
            return Ok(None);
        }
        if self.lockstep.has_seen("unlocked") {
            if !self.torn {
                self.torn = true;
                return Err(FrameError::BadFrame {
                    source_name: "test camera".into(),
                    what: "#x".into(),
                    reason: "torn".into(),
                });
            }
            return Err(FrameError::Fatal {
                source_name: "test camera".into(),
                reason: "unplugged".into(),
            });
        }
        let frame = self.lockstep.hand_over(self.next, ALICE);
        self.next += 1;
        Ok(Some(frame))
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
    let lockstep = Lockstep::default();
    let source = DiesWhenUnlocked {
        lockstep: lockstep.clone(),
        next: 0,
        torn: false,
    };
    let (mut parts, report) = run_lockstep(
        &lockstep,
        move || Ok(source),
        ColourCoded,
        door,
        &mut audit,
        &Shutdown::new(),
        None,
    );
    parts.relay.done();
    let err = report.unwrap_err();
    assert!(
        matches!(&err, DaemonError::Frame(e) if e.is_fatal()),
        "{err}"
    );
    assert!(err.to_string().contains("unplugged"), "{err}");
    assert_eq!(
        lockstep.events(),
        [
            (0, None, "started"),
            (40, Some(2), "unlocked"),
            (40, None, "fault")
        ]
    );
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

/// How many frames the camera has delivered into the daemon's queue, and whether it ended.
#[derive(Clone, Default)]
struct Delivered(Arc<(Mutex<(u64, bool)>, Condvar)>);

/// A camera that never waits, delivering `total` frames.
struct FastCamera {
    total: u64,
    next: u64,
    delivered: Delivered,
}

impl FrameSource for FastCamera {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        // The capture thread queues each frame before asking for the next one: all
        // `self.next` frames handed out so far are in the queue (or were taken) by now.
        let ended = self.next == self.total;
        *self.delivered.0 .0.lock().unwrap() = (self.next, ended);
        self.delivered.0 .1.notify_all();
        if ended {
            return Ok(None);
        }
        let seq = self.next;
        self.next += 1;
        Ok(Some(Frame {
            image: picture(NO_FACE),
            captured_at: Duration::from_millis(seq * FRAME_MS),
            seq,
        }))
    }
    fn describe(&self) -> String {
        "fast camera".into()
    }
}

/// A recogniser slower than the camera by construction: it finishes frame k only once the
/// camera has delivered frames k+1 and k+2 (or ended), so at least one of them waited in the
/// queue and was replaced. It notes which frames it was given.
struct Slow {
    delivered: Delivered,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl FaceRecognizer for Slow {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        self.seen.lock().unwrap().push(frame.seq);
        let (lock, cv) = &*self.delivered.0;
        let (delivered, timeout) = cv
            .wait_timeout_while(lock.lock().unwrap(), PATIENCE, |(n, ended)| {
                *n < frame.seq + 3 && !*ended
            })
            .unwrap();
        drop(delivered);
        if timeout.timed_out() {
            return Err(RecognizeError("the camera stopped delivering".into()));
        }
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
    let delivered = Delivered::default();
    let camera = FastCamera {
        total: 30,
        next: 0,
        delivered: delivered.clone(),
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let slow = Slow {
        delivered,
        seen: Arc::clone(&seen),
    };
    let (mut parts, report) = daemon::run(
        &daemon_cfg(),
        move || Ok(camera),
        slow,
        door,
        &mut audit,
        &Shutdown::new(),
    );
    parts.relay.done();
    let report = report.unwrap();
    assert_eq!(report.frames_captured, 30);
    assert_eq!(report.recognize_errors, 0, "{report:?}");
    assert!(report.frames_dropped > 0, "{report:?}");
    assert!(report.frames_decided < 30, "{report:?}");
    // Every frame is accounted for: dropped from a queue, too old, or decided.
    assert_eq!(
        report.frames_decided + report.frames_dropped + report.frames_stale,
        30,
        "{report:?}"
    );
    // After frame k the recogniser gets the newest one, k+2 or later (or the last frame),
    // never the next in line.
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.windows(2).all(|w| w[1] >= (w[0] + 2).min(29)),
        "{seen:?}"
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

/// An admin's change lands while every frame is being recognised: each result was judged by
/// the gallery that was in force before the change, so none is decided on and Alice, whom the
/// old gallery knew, is never let in. The same frames with no change unlock (the scenario
/// above), so what stops her here is the generation check.
#[test]
fn a_result_recognised_before_a_gallery_change_is_not_decided_on() {
    use edge::control::DoorControls;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct ChangedMidFrame {
        generation: Arc<AtomicU64>,
    }
    impl FaceRecognizer for ChangedMidFrame {
        fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
            let seen = ColourCoded.recognize(frame);
            self.generation.fetch_add(1, Ordering::SeqCst);
            seen
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut audit = AuditLog::open(&dir.path().join("audit.jsonl")).unwrap();
    // Only ever locked: start, end of stream, release.
    let pin = PinMock::new(&[
        PinTx::set(State::Low),
        PinTx::set(State::Low),
        PinTx::set(State::Low),
    ]);
    let door = DoorController::new(
        DoorRelay::new(pin, ActiveLevel::High).unwrap(),
        policy(),
        Duration::from_millis(100),
    );
    let generation = Arc::new(AtomicU64::new(0));
    let controls = DoorControls {
        generation: Some(Arc::clone(&generation)),
        ..DoorControls::default()
    };
    let lockstep = Lockstep::default();
    let source = scripted(&lockstep, runs(&[(ALICE, 20)]));
    let mut observer = lockstep.clone();
    let (mut parts, report) = daemon::run_controlled(
        &daemon_cfg(),
        Arc::new(lockstep.clone()),
        move || Ok(source),
        ChangedMidFrame {
            generation: Arc::clone(&generation),
        },
        door,
        &mut audit,
        &Shutdown::new(),
        &mut observer,
        &controls,
    );
    let report = report.unwrap();
    parts.relay.done();
    assert_eq!(report.count("unlocked"), 0, "{report:?}");
    assert_eq!(report.frames_superseded, 20, "{report:?}");
    assert_eq!(report.frames_decided, 0, "{report:?}");
    assert_eq!(controls.stats.frames_superseded.load(Ordering::SeqCst), 20);
}
