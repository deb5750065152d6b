//! The running door's side of the admin API: what the API may read (live counters, health) and
//! ask (a remote unlock), and which gallery generation a result must have been judged with.
//!
//! The deciding thread owns the door; the API never touches the relay. It queues a
//! [`DoorCommand`] here and waits for the deciding thread to carry it out (or refuse it) on its
//! next tick. A live enrollment borrows the camera's frames through the [`FrameTap`].
//! [`DoorControls::default`] is a door nobody administers: nothing queued, no
//! generation to keep up with.

use crate::frame::Frame;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters and health flags the daemon keeps up to date while it runs.
#[derive(Debug, Default)]
pub struct LiveStats {
    pub frames_captured: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_decided: AtomicU64,
    pub frames_stale: AtomicU64,
    pub bad_frames: AtomicU64,
    pub recognize_errors: AtomicU64,
    /// Results dropped because the gallery changed while their frame was being recognised.
    pub frames_superseded: AtomicU64,
    /// The frame source opened and has not failed fatally.
    pub camera_ok: AtomicBool,
    /// The last relay or input operation worked.
    pub relay_ok: AtomicBool,
    pub door_unlocked: AtomicBool,
    /// The decide loop is running (false before start and after stop).
    pub running: AtomicBool,
}

impl LiveStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What an admin can ask of the door itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoorCommand {
    /// Release the lock for one pulse; `by` names the admin (session and uid) for the audit log.
    Unlock { by: String },
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("the door is not running")]
    NotRunning,
    #[error("the door did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the door refused: {0}")]
    Refused(String),
}

type Reply = mpsc::Sender<Result<(), CommandError>>;

/// Commands waiting for the deciding thread.
#[derive(Debug, Default)]
pub struct CommandQueue {
    pending: Mutex<Vec<(DoorCommand, Reply)>>,
}

impl CommandQueue {
    /// Queue `command` and wait up to `timeout` for the deciding thread's answer.
    pub fn submit(
        &self,
        command: DoorCommand,
        running: &AtomicBool,
        timeout: Duration,
    ) -> Result<(), CommandError> {
        if !running.load(Ordering::SeqCst) {
            return Err(CommandError::NotRunning);
        }
        let (tx, rx) = mpsc::channel();
        self.lock().push((command, tx));
        match rx.recv_timeout(timeout) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(CommandError::Timeout(timeout)),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(CommandError::NotRunning),
        }
    }

    /// Everything queued so far, for the deciding thread to carry out and answer.
    pub fn take(&self) -> Vec<(DoorCommand, Reply)> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(DoorCommand, Reply)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Another live enrollment holds the camera's frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("another live enrollment is using the door's camera; try again when it ends")]
pub struct TapBusy;

/// The door camera's frames, lent to one live enrollment at a time. The capture thread offers
/// every frame; nothing is copied while nobody listens, and a listener that falls behind misses
/// frames instead of slowing the door.
#[derive(Debug, Default)]
pub struct FrameTap {
    listener: Mutex<Option<(u64, mpsc::SyncSender<Frame>)>>,
    opened: AtomicU64,
}

/// The receiving end of an open [`FrameTap`]; dropping it closes the tap.
pub struct TapReceiver {
    pub frames: mpsc::Receiver<Frame>,
    tap: Arc<FrameTap>,
    id: u64,
}

impl Drop for TapReceiver {
    fn drop(&mut self) {
        let mut listener = self.tap.lock();
        if listener.as_ref().is_some_and(|(id, _)| *id == self.id) {
            *listener = None;
        }
    }
}

impl FrameTap {
    /// Listen to the camera, with up to `depth` frames waiting.
    pub fn open(self: &Arc<Self>, depth: usize) -> Result<TapReceiver, TapBusy> {
        let mut listener = self.lock();
        if listener.is_some() {
            return Err(TapBusy);
        }
        let id = self.opened.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::sync_channel(depth.max(1));
        *listener = Some((id, tx));
        Ok(TapReceiver {
            frames: rx,
            tap: Arc::clone(self),
            id,
        })
    }

    /// Hand `frame` to the listener, if any, without waiting.
    pub fn offer(&self, frame: &Frame) {
        let mut listener = self.lock();
        let Some((_, tx)) = listener.as_ref() else {
            return;
        };
        if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(frame.clone()) {
            *listener = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(u64, mpsc::SyncSender<Frame>)>> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Shared between a running door and its admin API; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DoorControls {
    pub stats: Arc<LiveStats>,
    pub commands: Arc<CommandQueue>,
    /// The camera's frames for a live enrollment through the API.
    pub tap: Arc<FrameTap>,
    /// The gallery generation in force ([`crate::gallery::LiveGallery::generation_watch`]): a
    /// result recognised while an older one was in force is not decided on, so the first frame
    /// decided after an admin's change returns is judged by the changed gallery.
    pub generation: Option<Arc<AtomicU64>>,
}

impl DoorControls {
    /// The generation in force now (0 when the gallery is not live).
    pub fn generation_now(&self) -> u64 {
        self.generation
            .as_ref()
            .map_or(0, |g| g.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_to_a_stopped_door_is_refused_at_once() {
        let q = CommandQueue::default();
        let running = AtomicBool::new(false);
        let unlock = DoorCommand::Unlock { by: "t".into() };
        assert_eq!(
            q.submit(unlock, &running, Duration::from_secs(5)),
            Err(CommandError::NotRunning)
        );
        assert!(q.take().is_empty());
    }

    #[test]
    fn a_command_is_answered_by_whoever_takes_it() {
        let q = Arc::new(CommandQueue::default());
        let running = Arc::new(AtomicBool::new(true));
        let door = {
            let q = Arc::clone(&q);
            std::thread::spawn(move || loop {
                let taken = q.take();
                if let Some((cmd, reply)) = taken.into_iter().next() {
                    reply.send(Ok(())).unwrap();
                    return cmd;
                }
                std::thread::sleep(Duration::from_millis(1));
            })
        };
        let unlock = DoorCommand::Unlock { by: "t".into() };
        q.submit(unlock.clone(), &running, Duration::from_secs(60))
            .unwrap();
        assert_eq!(door.join().unwrap(), unlock);
    }

    #[test]
    fn an_unanswered_command_times_out() {
        let q = CommandQueue::default();
        let running = AtomicBool::new(true);
        let unlock = DoorCommand::Unlock { by: "t".into() };
        assert_eq!(
            q.submit(unlock, &running, Duration::from_millis(10)),
            Err(CommandError::Timeout(Duration::from_millis(10)))
        );
    }

    #[test]
    fn the_tap_lends_frames_to_one_listener_and_closes_when_it_goes() {
        let tap = Arc::new(FrameTap::default());
        let frame = |seq| Frame {
            image: image::RgbImage::new(2, 2),
            captured_at: Duration::from_millis(seq),
            seq,
        };
        tap.offer(&frame(0)); // nobody listens: nothing kept
        let rx = tap.open(1).unwrap();
        assert_eq!(tap.open(1).err(), Some(TapBusy));
        tap.offer(&frame(1));
        tap.offer(&frame(2)); // the listener is behind: dropped, the door goes on
        assert_eq!(rx.frames.try_recv().unwrap().seq, 1);
        assert!(rx.frames.try_recv().is_err());
        drop(rx);
        let rx = tap.open(1).expect("free again once the listener went away");
        tap.offer(&frame(3));
        assert_eq!(rx.frames.try_recv().unwrap().seq, 3);
    }
}
