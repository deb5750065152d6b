//! Lockstep replay: every frame of an image directory or recording decided in order, on the
//! recording's own clock.
//!
//! The live daemon ([`crate::daemon::run`]) drops frames a slow recogniser cannot keep up with
//! and stamps them with the wall clock: right for a camera, wrong for a replay, whose point is
//! to see what the door does with each frame. Here one thread reads a frame, recognises it,
//! lets the door's time pass up to the frame's timestamp (relock, inputs) and decides. Nothing
//! is dropped, so the same frames give the same decisions on any machine, however slow.

use crate::audit::AuditLog;
use crate::control::{DoorControls, LiveStats};
use crate::daemon::{
    answer_pending, carry_out_commands, conclude, started, DaemonError, DaemonReport, DoorObserver,
    EventStamp, FaceRecognizer, Shutdown, Sink,
};
use crate::door::{DoorController, DoorParts};
use crate::frame::{FrameError, FrameSource};
use embedded_hal::digital::{InputPin, OutputPin};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Decide on every frame of the source `open_source` gives, until it ends, `shutdown` is
/// requested or a fatal error; the door is locked in every case and its pins handed back.
pub fn replay<R, C, B, S, F, Rec>(
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
    F: FnOnce() -> Result<S, FrameError>,
    Rec: FaceRecognizer,
{
    let controls = DoorControls::default();
    replay_controlled(
        open_source,
        recognizer,
        door,
        audit,
        shutdown,
        observer,
        &controls,
    )
}

/// [`replay`] for a door with an admin API: its commands are carried out between frames and
/// its counters kept in `controls` (one thread recognises and decides, so every frame is
/// judged by the gallery in force when it is recognised).
pub fn replay_controlled<R, C, B, S, F, Rec>(
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
    F: FnOnce() -> Result<S, FrameError>,
    Rec: FaceRecognizer,
{
    let mut report = DaemonReport::default();
    let mut sink = Sink {
        audit,
        report: &mut report,
        observer,
    };
    controls.stats.running.store(true, Ordering::SeqCst);
    let outcome = replay_loop(
        open_source,
        &mut recognizer,
        &mut door,
        &mut sink,
        shutdown,
        controls,
    );
    controls.stats.running.store(false, Ordering::SeqCst);
    answer_pending(controls);
    let (parts, locked) = door.release();
    controls.stats.door_unlocked.store(false, Ordering::SeqCst);
    (parts, conclude(outcome, locked, report))
}

fn replay_loop<R, C, B, S, F, Rec>(
    open_source: F,
    recognizer: &mut Rec,
    door: &mut DoorController<R, C, B>,
    sink: &mut Sink,
    shutdown: &Shutdown,
    controls: &DoorControls,
) -> Result<(), DaemonError>
where
    R: OutputPin,
    C: InputPin,
    B: InputPin,
    S: FrameSource,
    F: FnOnce() -> Result<S, FrameError>,
    Rec: FaceRecognizer,
{
    let at = |at: Duration| EventStamp { at, frame: None };
    sink.record(door, at(Duration::ZERO), started())?;
    let stats = &*controls.stats;
    let mut source = match open_source() {
        Ok(s) => s,
        Err(e) => return Err(sink.fault(door, at(Duration::ZERO), e.into())),
    };
    stats.camera_ok.store(true, Ordering::SeqCst);
    tracing::info!("replaying {} in lockstep", source.describe());
    let mut now = Duration::ZERO;
    let reason = loop {
        if shutdown.is_requested() {
            break "signal";
        }
        let frame = match source.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break "end of stream",
            Err(e) if e.is_fatal() => {
                stats.camera_ok.store(false, Ordering::SeqCst);
                return Err(sink.fault(door, at(now), e.into()));
            }
            Err(e) => {
                sink.report.bad_frames += 1;
                LiveStats::bump(&stats.bad_frames);
                tracing::warn!("skipping: {e}");
                continue;
            }
        };
        sink.report.frames_captured += 1;
        LiveStats::bump(&stats.frames_captured);
        controls.tap.offer(&frame);
        // A recording's clock never runs backwards for the door.
        now = now.max(frame.captured_at);
        match door.tick(now) {
            Ok(events) => {
                for e in events {
                    sink.record(door, at(now), e)?;
                }
            }
            Err(e) => {
                stats.relay_ok.store(false, Ordering::SeqCst);
                return Err(sink.fault(door, at(now), DaemonError::Door(e)));
            }
        }
        stats.relay_ok.store(true, Ordering::SeqCst);
        carry_out_commands(door, sink, controls, at(now))?;
        stats
            .door_unlocked
            .store(door.is_unlocked(), Ordering::SeqCst);
        let faces = match recognizer.recognize(&frame) {
            Ok(faces) => faces,
            Err(e) => {
                sink.report.recognize_errors += 1;
                LiveStats::bump(&stats.recognize_errors);
                tracing::warn!("frame {}: {e}", frame.seq);
                continue;
            }
        };
        sink.report.frames_decided += 1;
        LiveStats::bump(&stats.frames_decided);
        let stamp = EventStamp {
            at: now,
            frame: Some(frame.seq),
        };
        match door.on_frame(now, &faces) {
            Ok(events) => {
                for e in events {
                    sink.record(door, stamp, e)?;
                }
            }
            Err(e) => return Err(sink.fault(door, stamp, DaemonError::Door(e))),
        }
        sink.observer.on_frame_done(frame.seq, true);
    };
    sink.stop(door, at(now), reason.to_string())
}
