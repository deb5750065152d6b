//! `edge run`: capture -> recognise -> decide, on three threads joined by one-slot queues.
//!
//! Each queue holds only the newest item: when a stage is slower than the one before it, the
//! older frame is dropped (and counted) so a decision is never made on a stale picture. The
//! deciding thread (the caller's) owns the door and the audit log; it also ticks the door every
//! `tick_ms` (relock, exit button, door contact) and logs a status line every
//! `status_interval_s`. It stops on SIGTERM/SIGINT (via [`Shutdown`]), at the end of a replayed
//! source, or on the first fatal error; in every case the door is locked before returning.

use crate::audit::{AuditError, AuditLog};
use crate::control::{DoorCommand, DoorControls, FrameTap, LiveStats};
use crate::door::{DoorController, DoorError, DoorEvent, DoorParts, Observation};
use crate::frame::{Frame, FrameError, FrameSource};
use embedded_hal::digital::{InputPin, OutputPin};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Frame-level recognition failure: the frame is skipped.
#[derive(Debug, thiserror::Error)]
#[error("recognition failed: {0}")]
pub struct RecognizeError(pub String);

/// Turns a frame into the faces in it. The edge pipeline implements this (detect, quality
/// gate, align, embed, 1:N match against the gallery at the operating threshold); tests use
/// scripted recognisers.
pub trait FaceRecognizer: Send {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError>;
}

impl<R: FaceRecognizer + ?Sized> FaceRecognizer for Box<R> {
    fn recognize(&mut self, frame: &Frame) -> Result<Vec<Observation>, RecognizeError> {
        (**self).recognize(frame)
    }
}

/// When, and on which frame, a door event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventStamp {
    /// On the terminal's clock (since start; a replay uses the recording's clock).
    pub at: Duration,
    /// The frame whose recognition caused it (None for ticks, start and stop).
    pub frame: Option<u64>,
}

/// Sees every door event right after the audit log recorded it (`edge run --dry-run` builds
/// its report this way). `()` ignores them.
pub trait DoorObserver {
    fn on_event(&mut self, stamp: EventStamp, event: &DoorEvent);

    /// The deciding thread is done with frame `seq`: decided on (`decided`, its events already
    /// passed to [`Self::on_event`]) or skipped as too old. Frames dropped, unreadable or not
    /// recognised never get here.
    fn on_frame_done(&mut self, _seq: u64, _decided: bool) {}
}

impl DoorObserver for () {
    fn on_event(&mut self, _: EventStamp, _: &DoorEvent) {}
}

/// The terminal's clock, time since the run started: frames are stamped with it when captured
/// and the door is ticked by it. [`MonotonicClock`] is the wall clock; a test drives its own, so
/// the door's time windows follow its script instead of the machine's speed.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// Monotonic wall time since [`MonotonicClock::start`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock(Instant);

impl MonotonicClock {
    pub fn start() -> Self {
        Self(Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Seconds between status lines in the log (0: never).
    pub status_interval_s: u64,
    /// A recognition result older than this (since capture) is not decided on.
    pub max_frame_age_ms: u64,
    /// How often the door is ticked (relock, inputs) in milliseconds.
    pub tick_ms: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            status_interval_s: 60,
            max_frame_age_ms: 700,
            tick_ms: 20,
        }
    }
}

impl DaemonConfig {
    pub fn validate(&self) -> Result<(), crate::door::config::ConfigError> {
        use crate::door::config::ConfigError;
        if !(50..=10_000).contains(&self.max_frame_age_ms) {
            return Err(ConfigError::new(
                "daemon",
                "max_frame_age_ms",
                "must be between 50 and 10000",
            ));
        }
        if !(1..=1000).contains(&self.tick_ms) {
            return Err(ConfigError::new(
                "daemon",
                "tick_ms",
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

/// The stop request, set by signals or by hand; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A flag raised by SIGTERM (systemd stop) and SIGINT (Ctrl-C).
    pub fn on_signals() -> std::io::Result<Self> {
        let s = Self::new();
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, Arc::clone(&s.0))?;
        }
        Ok(s)
    }

    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the daemon stopped with an error. The door was locked in every case.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Door(#[from] DoorError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0} thread panicked")]
    Panicked(&'static str),
}

/// What happened during a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaemonReport {
    pub frames_captured: u64,
    /// Replaced in a queue by a newer frame before anyone looked at it.
    pub frames_dropped: u64,
    /// Recognised, but too old to decide on.
    pub frames_stale: u64,
    /// Recognised with a gallery an admin has changed since: not decided on.
    pub frames_superseded: u64,
    pub bad_frames: u64,
    pub recognize_errors: u64,
    pub frames_decided: u64,
    /// Door events by [`DoorEvent::kind`].
    pub events: BTreeMap<&'static str, u64>,
    pub stop_reason: String,
}

impl DaemonReport {
    pub fn count(&self, kind: &str) -> u64 {
        self.events.get(kind).copied().unwrap_or(0)
    }
}

/// Why a producer thread stopped.
#[derive(Debug, Clone)]
enum StopCause {
    EndOfStream,
    Stopped,
    Fatal(Arc<FrameError>),
}

enum Take<T> {
    Item(T),
    TimedOut,
    Closed(StopCause),
}

/// A queue of capacity one that keeps the newest item.
struct LatestSlot<T> {
    state: Mutex<(Option<T>, Option<StopCause>)>,
    ready: Condvar,
}

impl<T> LatestSlot<T> {
    fn new() -> Self {
        Self {
            state: Mutex::new((None, None)),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<T>, Option<StopCause>)> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Store `item`; true when it replaced one nobody took.
    fn put(&self, item: T) -> bool {
        let replaced = self.lock().0.replace(item).is_some();
        self.ready.notify_one();
        replaced
    }

    fn close(&self, cause: StopCause) {
        self.lock().1.get_or_insert(cause);
        self.ready.notify_all();
    }

    /// The item if there is one (even after close), else the close cause, else wait.
    fn take(&self, timeout: Duration) -> Take<T> {
        let mut state = self.lock();
        if state.0.is_none() && state.1.is_none() {
            state = match self.ready.wait_timeout(state, timeout) {
                Ok((s, _)) => s,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        match (state.0.take(), &state.1) {
            (Some(item), _) => Take::Item(item),
            (None, Some(cause)) => Take::Closed(cause.clone()),
            (None, None) => Take::TimedOut,
        }
    }
}

struct Stamped<T> {
    at: Duration,
    seq: u64,
    /// The gallery generation in force when recognition of the frame began.
    generation: u64,
    item: T,
}

/// Run the terminal until shutdown, end of stream or a fatal error. `open_source` runs on the
/// capture thread (camera handles may not move between threads). Returns the door's pins (the
/// door locked) and the report or the error that stopped it.
pub fn run<R, C, B, S, F, Rec>(
    cfg: &DaemonConfig,
    open_source: F,
    recognizer: Rec,
    door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError> + Send + 'static,
    Rec: FaceRecognizer + 'static,
{
    run_observed(cfg, open_source, recognizer, door, audit, shutdown, &mut ())
}

/// [`run`], telling `observer` about each door event.
pub fn run_observed<R, C, B, S, F, Rec>(
    cfg: &DaemonConfig,
    open_source: F,
    recognizer: Rec,
    door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: &mut dyn DoorObserver,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError> + Send + 'static,
    Rec: FaceRecognizer + 'static,
{
    run_clocked(
        cfg,
        Arc::new(MonotonicClock::start()),
        open_source,
        recognizer,
        door,
        audit,
        shutdown,
        observer,
    )
}

/// [`run_observed`] on `clock` instead of the wall clock.
#[allow(clippy::too_many_arguments)] // run_observed's arguments and the clock
pub fn run_clocked<R, C, B, S, F, Rec>(
    cfg: &DaemonConfig,
    clock: Arc<dyn Clock>,
    open_source: F,
    recognizer: Rec,
    door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: &mut dyn DoorObserver,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError> + Send + 'static,
    Rec: FaceRecognizer + 'static,
{
    let controls = DoorControls::default();
    run_controlled(
        cfg,
        clock,
        open_source,
        recognizer,
        door,
        audit,
        shutdown,
        observer,
        &controls,
    )
}

/// [`run_clocked`] for a door with an admin API: `controls` carries its counters, its queued
/// commands and the gallery generation results are judged with.
#[allow(clippy::too_many_arguments)] // run_clocked's arguments and the controls
pub fn run_controlled<R, C, B, S, F, Rec>(
    cfg: &DaemonConfig,
    clock: Arc<dyn Clock>,
    open_source: F,
    mut recognizer: Rec,
    mut door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: &mut dyn DoorObserver,
    controls: &DoorControls,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError> + Send + 'static,
    Rec: FaceRecognizer + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::clone(&controls.stats);
    let frames = Arc::new(LatestSlot::<Stamped<Frame>>::new());
    let results = Arc::new(LatestSlot::<Stamped<Vec<Observation>>>::new());

    let capture = {
        let (stop, counters, frames, clock, tap) = (
            Arc::clone(&stop),
            Arc::clone(&counters),
            Arc::clone(&frames),
            Arc::clone(&clock),
            Arc::clone(&controls.tap),
        );
        thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                let cause = capture_loop(open_source, &frames, &counters, &tap, &stop, &*clock);
                frames.close(cause);
            })
    };
    let recognise = {
        let stop = Arc::clone(&stop);
        let (frames, results) = (Arc::clone(&frames), Arc::clone(&results));
        let live = controls.clone();
        thread::Builder::new()
            .name("recognise".into())
            .spawn(move || {
                let cause = recognise_loop(&mut recognizer, &frames, &results, &live, &stop);
                results.close(cause);
            })
    };

    let mut report = DaemonReport::default();
    let outcome = match (capture, recognise) {
        (Ok(capture), Ok(recognise)) => {
            let mut sink = Sink {
                audit,
                report: &mut report,
                observer,
            };
            controls.stats.running.store(true, Ordering::SeqCst);
            let decided = decide_loop(
                cfg, &mut door, &mut sink, &results, controls, shutdown, &*clock,
            );
            controls.stats.running.store(false, Ordering::SeqCst);
            answer_pending(controls);
            stop.store(true, Ordering::SeqCst);
            frames.close(StopCause::Stopped);
            results.close(StopCause::Stopped);
            let joined = [("capture", capture.join()), ("recognise", recognise.join())]
                .into_iter()
                .find(|(_, j)| j.is_err())
                .map(|(name, _)| DaemonError::Panicked(name));
            match (decided, joined) {
                (Err(e), _) => Err(e),
                (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            stop.store(true, Ordering::SeqCst);
            frames.close(StopCause::Stopped);
            results.close(StopCause::Stopped);
            Err(DaemonError::Frame(FrameError::Fatal {
                source_name: "daemon".into(),
                reason: format!("cannot start a thread: {e}"),
            }))
        }
    };

    let (parts, locked) = door.release();
    controls.stats.door_unlocked.store(false, Ordering::SeqCst);
    report.frames_captured = LiveStats::get(&counters.frames_captured);
    report.frames_dropped = LiveStats::get(&counters.frames_dropped);
    report.bad_frames = LiveStats::get(&counters.bad_frames);
    report.recognize_errors = LiveStats::get(&counters.recognize_errors);
    report.frames_superseded = LiveStats::get(&counters.frames_superseded);
    (parts, conclude(outcome, locked, report))
}

/// Commands queued after the door stopped are refused, not left waiting.
pub(crate) fn answer_pending(controls: &DoorControls) {
    for (_, reply) in controls.commands.take() {
        let _ = reply.send(Err(crate::control::CommandError::NotRunning));
    }
}

/// Carry out the admin's queued commands at `now`, recording each.
pub(crate) fn carry_out_commands<R: OutputPin, C: InputPin, B: InputPin>(
    door: &mut DoorController<R, C, B>,
    sink: &mut Sink,
    controls: &DoorControls,
    stamp: EventStamp,
) -> Result<(), DaemonError> {
    for (command, reply) in controls.commands.take() {
        match command {
            DoorCommand::Unlock { by } => match door.remote_unlock(stamp.at, by) {
                Ok(event) => {
                    let recorded = sink.record(door, stamp, event);
                    let answer = match &recorded {
                        Ok(()) => Ok(()),
                        Err(e) => Err(crate::control::CommandError::Refused(e.to_string())),
                    };
                    let _ = reply.send(answer);
                    recorded?;
                }
                Err(e) => {
                    let _ = reply.send(Err(crate::control::CommandError::Refused(e.to_string())));
                    return Err(sink.fault(door, stamp, DaemonError::Door(e)));
                }
            },
        }
    }
    Ok(())
}

/// The result of a run from how it ended and whether the door locked after it: the first error
/// wins, and a door that would not lock is an error even after a clean stop.
pub(crate) fn conclude(
    outcome: Result<(), DaemonError>,
    locked: Result<(), DoorError>,
    report: DaemonReport,
) -> Result<DaemonReport, DaemonError> {
    match (outcome, locked) {
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(DaemonError::Door(e)),
        (Ok(()), Ok(())) => Ok(report),
    }
}

/// Run the terminal the way `[camera]` calls for. A camera, or a replay paced in real time, goes
/// through the threaded [`run_observed`] on the wall clock; a directory or recording replayed as
/// fast as possible goes through [`crate::replay::replay`]: every frame decided, in order, on
/// the recording's clock (so `edge run` on a directory ends by itself with the same decisions
/// on any machine).
pub fn run_configured<R, C, B, Rec>(
    cfg: &crate::terminal::TerminalConfig,
    recognizer: Rec,
    door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: &mut dyn DoorObserver,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    Rec: FaceRecognizer + 'static,
{
    let controls = DoorControls::default();
    run_configured_controlled(cfg, recognizer, door, audit, shutdown, observer, &controls)
}

/// [`run_configured`] for a door with an admin API ([`run_controlled`]).
pub fn run_configured_controlled<R, C, B, Rec>(
    cfg: &crate::terminal::TerminalConfig,
    recognizer: Rec,
    door: DoorController<R, C, B>,
    audit: &mut AuditLog,
    shutdown: &Shutdown,
    observer: &mut dyn DoorObserver,
    controls: &DoorControls,
) -> (DoorParts<R, C, B>, Result<DaemonReport, DaemonError>)
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    Rec: FaceRecognizer + 'static,
{
    let camera = cfg.camera.clone();
    let open = move || crate::frame::open_source(&camera);
    if cfg.camera.is_lockstep_replay() {
        crate::replay::replay_controlled(
            open, recognizer, door, audit, shutdown, observer, controls,
        )
    } else {
        run_controlled(
            &cfg.daemon,
            Arc::new(MonotonicClock::start()),
            open,
            recognizer,
            door,
            audit,
            shutdown,
            observer,
            controls,
        )
    }
}

fn capture_loop<S, F>(
    open_source: F,
    frames: &LatestSlot<Stamped<Frame>>,
    counters: &LiveStats,
    tap: &FrameTap,
    stop: &AtomicBool,
    clock: &dyn Clock,
) -> StopCause
where
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError>,
{
    let mut source = match open_source() {
        Ok(s) => s,
        Err(e) => return StopCause::Fatal(Arc::new(e)),
    };
    tracing::info!("capturing from {}", source.describe());
    counters.camera_ok.store(true, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        match source.next_frame() {
            Ok(Some(frame)) => {
                LiveStats::bump(&counters.frames_captured);
                tap.offer(&frame);
                let stamped = Stamped {
                    at: clock.now(),
                    seq: frame.seq,
                    generation: 0,
                    item: frame,
                };
                if frames.put(stamped) {
                    LiveStats::bump(&counters.frames_dropped);
                }
            }
            Ok(None) => return StopCause::EndOfStream,
            Err(e) if e.is_fatal() => {
                counters.camera_ok.store(false, Ordering::SeqCst);
                return StopCause::Fatal(Arc::new(e));
            }
            Err(e) => {
                LiveStats::bump(&counters.bad_frames);
                tracing::warn!("skipping: {e}");
            }
        }
    }
    StopCause::Stopped
}

fn recognise_loop<Rec: FaceRecognizer>(
    recognizer: &mut Rec,
    frames: &LatestSlot<Stamped<Frame>>,
    results: &LatestSlot<Stamped<Vec<Observation>>>,
    controls: &DoorControls,
    stop: &AtomicBool,
) -> StopCause {
    let counters = &controls.stats;
    while !stop.load(Ordering::SeqCst) {
        match frames.take(Duration::from_millis(100)) {
            Take::Item(Stamped { at, seq, item, .. }) => {
                // Read before recognising: the recogniser then uses this generation or a newer one.
                let generation = controls.generation_now();
                match recognizer.recognize(&item) {
                    Ok(faces) => {
                        if results.put(Stamped {
                            at,
                            seq,
                            generation,
                            item: faces,
                        }) {
                            LiveStats::bump(&counters.frames_dropped);
                        }
                    }
                    Err(e) => {
                        LiveStats::bump(&counters.recognize_errors);
                        tracing::warn!("frame {seq}: {e}");
                    }
                }
            }
            Take::TimedOut => {}
            Take::Closed(cause) => return cause,
        }
    }
    StopCause::Stopped
}

fn decide_loop<R: OutputPin, C: InputPin, B: InputPin>(
    cfg: &DaemonConfig,
    door: &mut DoorController<R, C, B>,
    sink: &mut Sink,
    results: &LatestSlot<Stamped<Vec<Observation>>>,
    controls: &DoorControls,
    shutdown: &Shutdown,
    clock: &dyn Clock,
) -> Result<(), DaemonError> {
    let counters = &*controls.stats;
    let tick = Duration::from_millis(cfg.tick_ms);
    let max_age = Duration::from_millis(cfg.max_frame_age_ms);
    let status_every = Duration::from_secs(cfg.status_interval_s);
    let mut next_status = clock.now() + status_every;
    let at = |at: Duration| EventStamp { at, frame: None };

    sink.record(door, at(clock.now()), started())?;
    let stop_reason = loop {
        if shutdown.is_requested() {
            break "signal".to_string();
        }
        let taken = results.take(tick);
        let now = clock.now();
        match door.tick(now) {
            Ok(events) => {
                for e in events {
                    sink.record(door, at(now), e)?;
                }
            }
            Err(e) => {
                counters.relay_ok.store(false, Ordering::SeqCst);
                return Err(sink.fault(door, at(now), DaemonError::Door(e)));
            }
        }
        counters.relay_ok.store(true, Ordering::SeqCst);
        carry_out_commands(door, sink, controls, at(now))?;
        counters
            .door_unlocked
            .store(door.is_unlocked(), Ordering::SeqCst);
        match taken {
            Take::Item(Stamped {
                at: captured,
                seq,
                generation,
                item: faces,
            }) => {
                let fresh = now.saturating_sub(captured) <= max_age;
                let current = generation >= controls.generation_now();
                let decided = fresh && current;
                if !fresh {
                    sink.report.frames_stale += 1;
                    LiveStats::bump(&counters.frames_stale);
                    tracing::debug!(
                        "frame {seq} is {:?} old: not deciding on it",
                        now - captured
                    );
                } else if !current {
                    sink.report.frames_superseded += 1;
                    LiveStats::bump(&counters.frames_superseded);
                    tracing::debug!("frame {seq} was recognised with an older gallery: skipped");
                } else {
                    sink.report.frames_decided += 1;
                    LiveStats::bump(&counters.frames_decided);
                    let stamp = EventStamp {
                        at: captured,
                        frame: Some(seq),
                    };
                    match door.on_frame(captured, &faces) {
                        Ok(events) => {
                            for e in events {
                                sink.record(door, stamp, e)?;
                            }
                        }
                        Err(e) => return Err(sink.fault(door, stamp, DaemonError::Door(e))),
                    }
                }
                sink.observer.on_frame_done(seq, decided);
            }
            Take::TimedOut => {}
            Take::Closed(StopCause::EndOfStream) => break "end of stream".to_string(),
            Take::Closed(StopCause::Stopped) => break "stopped".to_string(),
            Take::Closed(StopCause::Fatal(e)) => {
                let err =
                    DaemonError::Frame(Arc::try_unwrap(e).unwrap_or_else(|e| FrameError::Fatal {
                        source_name: "camera".into(),
                        reason: e.to_string(),
                    }));
                return Err(sink.fault(door, at(now), err));
            }
        }
        if cfg.status_interval_s > 0 && now >= next_status {
            next_status = now + status_every;
            log_status(door, sink.audit, counters, sink.report, now);
        }
    };
    sink.stop(door, at(clock.now()), stop_reason)
}

/// The event that opens every run.
pub(crate) fn started() -> DoorEvent {
    DoorEvent::Started {
        version: env!("CARGO_PKG_VERSION").into(),
    }
}

/// Where door events go: the audit log, the report's counters and the observer.
pub(crate) struct Sink<'a> {
    pub(crate) audit: &'a mut AuditLog,
    pub(crate) report: &'a mut DaemonReport,
    pub(crate) observer: &'a mut dyn DoorObserver,
}

impl Sink<'_> {
    /// Append to the audit log and count; if the log cannot be written the door is locked,
    /// since the terminal must not act unrecorded.
    pub(crate) fn record<R: OutputPin, C: InputPin, B: InputPin>(
        &mut self,
        door: &mut DoorController<R, C, B>,
        stamp: EventStamp,
        event: DoorEvent,
    ) -> Result<(), DaemonError> {
        tracing::info!(event = event.kind(), "{event:?}");
        *self.report.events.entry(event.kind()).or_insert(0) += 1;
        if let Err(e) = self.audit.append(&event) {
            let _ = door.fail_secure();
            return Err(DaemonError::Audit(e));
        }
        self.observer.on_event(stamp, &event);
        Ok(())
    }

    /// Lock, record the fault (best effort) and hand the error back.
    pub(crate) fn fault<R: OutputPin, C: InputPin, B: InputPin>(
        &mut self,
        door: &mut DoorController<R, C, B>,
        stamp: EventStamp,
        err: DaemonError,
    ) -> DaemonError {
        if let Err(e) = door.fail_secure() {
            tracing::error!("could not lock the door: {e}");
        }
        self.report.stop_reason = err.to_string();
        let what = err.to_string();
        if let Err(e) = self.record(door, stamp, DoorEvent::Fault { what }) {
            tracing::error!("could not record the fault: {e}");
        }
        err
    }

    /// A clean stop: lock, then record why.
    pub(crate) fn stop<R: OutputPin, C: InputPin, B: InputPin>(
        &mut self,
        door: &mut DoorController<R, C, B>,
        stamp: EventStamp,
        reason: String,
    ) -> Result<(), DaemonError> {
        door.fail_secure()?;
        self.report.stop_reason = reason.clone();
        self.record(door, stamp, DoorEvent::Stopped { reason })
    }
}

fn log_status<R: OutputPin, C: InputPin, B: InputPin>(
    door: &DoorController<R, C, B>,
    audit: &AuditLog,
    counters: &LiveStats,
    report: &DaemonReport,
    now: Duration,
) {
    tracing::info!(
        target: "status",
        "up {}s frames={} dropped={} stale={} bad={} recognise_errors={} decided={} unlocks={} denials={} lockout={} door={} audit_entries={} audit_head={}",
        now.as_secs(),
        LiveStats::get(&counters.frames_captured),
        LiveStats::get(&counters.frames_dropped),
        report.frames_stale,
        LiveStats::get(&counters.bad_frames),
        LiveStats::get(&counters.recognize_errors),
        report.frames_decided,
        report.count("unlocked"),
        report.count("denied"),
        door.policy().is_locked_out(now),
        if door.is_unlocked() { "unlocked" } else { "locked" },
        audit.entries(),
        audit.head(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_section_defaults_and_ranges() {
        let cfg: DaemonConfig = toml::from_str("status_interval_s = 10").unwrap();
        assert_eq!(
            cfg.max_frame_age_ms,
            DaemonConfig::default().max_frame_age_ms
        );
        cfg.validate().unwrap();
        let bad: DaemonConfig = toml::from_str("tick_ms = 0").unwrap();
        assert!(bad.validate().unwrap_err().to_string().contains("tick_ms"));
        assert!(toml::from_str::<DaemonConfig>("tick = 5").is_err());
    }

    #[test]
    fn latest_slot_keeps_the_newest_and_drains_before_closing() {
        let slot = LatestSlot::new();
        assert!(!slot.put(1));
        assert!(slot.put(2), "1 was never taken: replaced");
        slot.close(StopCause::EndOfStream);
        assert!(matches!(slot.take(Duration::ZERO), Take::Item(2)));
        assert!(matches!(
            slot.take(Duration::ZERO),
            Take::Closed(StopCause::EndOfStream)
        ));
        let empty = LatestSlot::<u8>::new();
        assert!(matches!(
            empty.take(Duration::from_millis(1)),
            Take::TimedOut
        ));
    }
}
