//! The door service in one process, as it runs at a door: the real pipeline (YuNet + SFace
//! from the team kit) searching a live gallery, the admin API on a Unix socket driven with
//! curl (the way docs/API.md shows), and a door whose camera is a replay the test feeds one
//! frame at a time, on a clock the test advances, so every decision follows the script and not
//! the machine's speed (qemu included).
//!
//! Each approach shows the very photo that was enrolled (a self-match scores ~1.0 with any
//! recogniser on any CPU), and a removed person is judged against a gallery without them, so
//! no check here hangs on one model's verdict on a borderline sample.

mod common;

use edge::audit::AuditLog;
use edge::daemon::{Clock, DaemonConfig, DaemonReport, Shutdown};
use edge::frame::{Frame, FrameError, FrameSource};
use edge::gallery::{GalleryStore, LiveGallery};
use edge::pipeline::{load_image, Pipeline};
use edge::recognizer::PipelineRecognizer;
use edge::service::auth::PinFile;
use edge::service::peer::PeerPolicy;
use edge::service::{AdminConfig, DoorService, FeedObserver, ModelInfo, ServerHandle};
use image::RgbImage;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const PIN: &str = "482916";
/// Per frame on a slow machine (YuNet + SFace under qemu): a deadline, not a measurement.
const FRAME_DEADLINE: Duration = Duration::from_secs(600);

/// The door's clock: moved only by the test.
#[derive(Default)]
struct TestClock(Mutex<Duration>);

impl TestClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Duration {
        *self.0.lock().unwrap()
    }
}

/// A camera replaying whatever the test sends; `None` ends the stream.
struct FedCamera {
    frames: mpsc::Receiver<Option<RgbImage>>,
    clock: Arc<TestClock>,
    seq: u64,
}

impl FrameSource for FedCamera {
    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        match self.frames.recv() {
            Ok(Some(image)) => {
                self.seq += 1;
                Ok(Some(Frame {
                    image,
                    captured_at: self.clock.now(),
                    seq: self.seq - 1,
                }))
            }
            _ => Ok(None),
        }
    }

    fn describe(&self) -> String {
        "test feed".into()
    }
}

fn kit_photo(rel: &str) -> Option<PathBuf> {
    common::kit(&format!("faces/real-small/{rel}"))
}

/// A running door service in a temp directory.
struct Door {
    dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    service: Arc<DoorService>,
    server: Option<ServerHandle>,
    clock: Arc<TestClock>,
    camera: mpsc::Sender<Option<RgbImage>>,
    thread: Option<JoinHandle<DaemonReport>>,
}

const DOOR: &str = r#"
[door.relay]
chip = "/dev/null"
line = 1
active = "high"
unlock_ms = 1000

[door.policy]
agree_frames = 2
agree_window_ms = 2000
leave_ms = 1000
cooldown_ms = 500
lockout_after_unknowns = 10
unknown_window_ms = 60000
lockout_ms = 1000

[admin]
socket = "admin.sock"
pin_file = "admin.pin"
max_failures = 3
"#;

impl Door {
    fn start() -> Option<Self> {
        let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
        let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
        let dir = tempfile::tempdir().unwrap();
        let text = common::sface_config(&yunet, &sface, dir.path(), 320) + DOOR;
        let config = dir.path().join("edge.toml");
        std::fs::write(&config, &text).unwrap();
        let cfg = edge::Config::load(&config).unwrap();
        let terminal = edge::terminal::TerminalConfig::load(&config).unwrap();
        let admin: AdminConfig = terminal.admin.clone().unwrap();
        PinFile::new(&admin.pin_file).set(PIN).unwrap();

        let pipeline = Arc::new(Pipeline::load(&cfg).unwrap());
        let r = pipeline.recognizer();
        let store = GalleryStore::from_config(&cfg.gallery).unwrap();
        let gallery =
            Arc::new(LiveGallery::open(store, r.model_id(), r.embedding_dim(), None).unwrap());
        let audit = AuditLog::open(&terminal.audit.path).unwrap();
        let model = ModelInfo {
            model_id: r.model_id().into(),
            bundle_version: None,
            thresholds: json!(r.thresholds()),
        };
        let service = Arc::new(DoorService::new(
            &admin,
            Arc::clone(&gallery),
            Arc::clone(&pipeline),
            audit.clone(),
            model,
            PeerPolicy::owner_only(),
        ));
        let server = edge::service::serve_unix(Arc::clone(&service), &admin.socket).unwrap();

        let clock = Arc::new(TestClock::default());
        let (camera, frames) = mpsc::channel();
        let thread = {
            let (service, clock) = (Arc::clone(&service), Arc::clone(&clock));
            let recognizer = PipelineRecognizer::live(pipeline, gallery);
            let (door, _tap) = edge::door::simulated::door_controller(&terminal.door);
            let mut audit = audit;
            std::thread::spawn(move || {
                let open_clock = Arc::clone(&clock);
                let open = move || {
                    Ok(FedCamera {
                        frames,
                        clock: open_clock,
                        seq: 0,
                    })
                };
                let mut feed = FeedObserver {
                    feed: &service.events,
                    next: &mut (),
                };
                let cfg = DaemonConfig {
                    status_interval_s: 0,
                    max_frame_age_ms: 700,
                    tick_ms: 5,
                };
                let (_, result) = edge::daemon::run_controlled(
                    &cfg,
                    clock,
                    open,
                    recognizer,
                    door,
                    &mut audit,
                    &Shutdown::new(),
                    &mut feed,
                    &service.controls,
                );
                result.unwrap()
            })
        };
        let door = Door {
            socket: admin.socket.clone(),
            dir,
            config,
            service,
            server: Some(server),
            clock,
            camera,
            thread: Some(thread),
        };
        door.wait_until("the door loop runs", || {
            door.service.controls.stats.running.load(Ordering::SeqCst)
        });
        Some(door)
    }

    fn wait_until(&self, what: &str, done: impl Fn() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < FRAME_DEADLINE,
                "timed out waiting: {what}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Frames that reached the deciding thread (decided on, or skipped there).
    fn frames_done(&self) -> u64 {
        let s = &self.service.controls.stats;
        [
            &s.frames_decided,
            &s.frames_stale,
            &s.frames_superseded,
            &s.recognize_errors,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }

    /// Show `image` to the camera and wait until the door has dealt with it; then 200 ms pass.
    fn show(&self, image: &RgbImage) {
        let before = self.frames_done();
        self.camera.send(Some(image.clone())).unwrap();
        self.wait_until("the frame to be decided", || self.frames_done() > before);
        self.clock.advance(Duration::from_millis(200));
    }

    /// The visitor walks away: an empty frame, then longer than leave_ms passes.
    fn leave(&self) {
        self.show(&RgbImage::from_pixel(320, 240, image::Rgb([90, 90, 90])));
        self.clock.advance(Duration::from_millis(2500));
    }

    fn approach(&self, image: &RgbImage) {
        for _ in 0..3 {
            self.show(image);
        }
        self.leave();
    }

    fn curl(&self, args: &[&str]) -> (u16, Value) {
        curl(&self.socket, args)
    }

    fn login(&self) -> String {
        let (status, body) = self.curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &json!({ "pin": PIN }).to_string(),
            "http://door/api/v1/session",
        ]);
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    /// The door events (from the API's feed) of `kind`.
    fn door_events(&self, kind: &str) -> Vec<Value> {
        self.service
            .events
            .recent(usize::MAX)
            .into_iter()
            .filter(|r| r.source == "door" && r.data["event"] == kind)
            .map(|r| r.data)
            .collect()
    }

    fn stop(mut self) -> (DaemonReport, tempfile::TempDir) {
        self.camera.send(None).unwrap();
        let report = self.thread.take().unwrap().join().unwrap();
        drop(self.server.take());
        (report, self.dir)
    }
}

/// `curl` over the admin socket; the status and the JSON body (Null when empty).
fn curl(socket: &Path, args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "600", "--unix-socket"])
        .arg(socket)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl (apt package curl, installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl gave no status: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
    };
    (status, body)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

fn audit_entries(path: &Path) -> Vec<Value> {
    edge::audit::verify_file(path).unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].clone())
        .collect()
}

#[test]
fn enrolled_through_the_api_let_in_then_removed_and_denied_without_a_restart() {
    let Some(photo) = kit_photo("obama/obama.jpg") else {
        return;
    };
    let Some(door) = Door::start() else { return };
    let face = load_image(&photo).unwrap();

    // Nobody is enrolled: the face is a stranger.
    door.approach(&face);
    assert!(door.door_events("unlocked").is_empty());
    assert_eq!(door.door_events("denied").len(), 1);

    // Enroll through the API while the door runs; the next approach is let in.
    let token = door.login();
    let photo_arg = format!("photo=@{}", photo.display());
    let (status, body) = door.curl(&[
        "-H",
        &bearer(&token),
        "-F",
        "name=Barack Obama",
        "-F",
        &photo_arg,
        "http://door/api/v1/people",
    ]);
    assert_eq!(status, 201, "{body}");
    let id = body["person"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["person"]["templates"], 1);
    door.approach(&face);
    let unlocked = door.door_events("unlocked");
    assert_eq!(unlocked.len(), 1, "{unlocked:?}");
    assert_eq!(unlocked[0]["person"]["id"], id.as_str());

    // While the door runs it holds the gallery: the CLI cannot write behind its back.
    let cli = common::edge_command()
        .arg("--config")
        .arg(&door.config)
        .args(["gallery", "remove", &id])
        .output()
        .unwrap();
    let (_, stderr) = common::output_text(&cli);
    assert_eq!(cli.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("lock") && stderr.contains("door service"),
        "{stderr}"
    );

    // Removed through the API: the very next approach is judged without them.
    let (status, body) = door.curl(&[
        "-X",
        "DELETE",
        "-H",
        &bearer(&token),
        &format!("http://door/api/v1/people/{id}"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"]["name"], "Barack Obama");
    door.approach(&face);
    assert_eq!(
        door.door_events("unlocked").len(),
        1,
        "no unlock after removal"
    );
    assert_eq!(door.door_events("denied").len(), 2);

    // A remote unlock is carried out by the door loop and names the admin.
    let (status, body) = door.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer(&token),
        "http://door/api/v1/door/unlock",
    ]);
    assert_eq!(status, 200, "{body}");
    let remote = door.door_events("remote_unlock");
    assert_eq!(remote.len(), 1);
    assert!(remote[0]["by"].as_str().unwrap().contains("session"));

    let (status, st) = door.curl(&["http://door/api/v1/status"]);
    assert_eq!(status, 200);
    assert_eq!(st["gallery"]["people"], 0);
    assert_eq!(st["gallery"]["generation"], 2);
    assert_eq!(st["door"]["running"], true);

    let audit_path = door.dir.path().join("audit.jsonl");
    let (report, dir) = door.stop();
    assert_eq!(report.count("unlocked"), 1);
    // The audit log holds the admin's actions, each naming the session, in order.
    let entries = audit_entries(&audit_path);
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e["event"] == "admin")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["enroll", "remove"]);
    assert!(entries
        .iter()
        .filter(|e| e["event"] == "admin")
        .all(|e| e["by"]["session"].is_string() && e["person"]["id"] == id.as_str()));
    // After the service stopped, the gallery on disk is the one it last saved.
    let cfg = edge::Config::load(&dir.path().join("edge.toml")).unwrap();
    let g = GalleryStore::from_config(&cfg.gallery)
        .unwrap()
        .load()
        .unwrap()
        .unwrap();
    assert_eq!((g.generation, g.people.len()), (2, 0));
}

#[test]
fn wrong_pins_are_throttled_and_audited_and_changes_need_a_session() {
    let Some(door) = Door::start() else { return };
    let login = |pin: &str| {
        door.curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &json!({ "pin": pin }).to_string(),
            "http://door/api/v1/session",
        ])
    };
    // No session, or a made-up one: refused, nothing changed.
    for auth in [None, Some(bearer(&"0".repeat(64)))] {
        let mut args = vec!["-X", "DELETE"];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        args.push("http://door/api/v1/people/anyone");
        let (status, body) = door.curl(&args);
        assert_eq!(status, 401, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("session"),
            "{body}"
        );
    }
    let (status, _) = door.curl(&["http://door/api/v1/people"]);
    assert_eq!(status, 401);
    let (status, body) = door.curl(&["-X", "POST", "http://door/api/v1/door/unlock"]);
    assert_eq!(status, 401, "{body}");
    assert!(door.door_events("remote_unlock").is_empty());

    // Wrong PIN: refused with the wait; trying again at once is throttled.
    let (status, body) = login("111111");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["retry_after_s"], 1);
    let (status, body) = login(PIN);
    assert_eq!(status, 429, "even the right PIN waits: {body}");
    std::thread::sleep(Duration::from_millis(1100));
    let (status, body) = login("222222");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["retry_after_s"], 2);
    std::thread::sleep(Duration::from_millis(2100));
    // The third failure (max_failures = 3) locks the API out.
    let (status, body) = login("333333");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("locked out"),
        "{body}"
    );
    let (status, body) = login(PIN);
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("locked out"),
        "{body}"
    );
    assert!(body["retry_after_s"].as_u64().unwrap() > 200);

    let audit_path = door.dir.path().join("audit.jsonl");
    let (_, _dir) = door.stop();
    let failures: Vec<Value> = audit_entries(&audit_path)
        .into_iter()
        .filter(|e| e["event"] == "admin_session_failed")
        .collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert_eq!(failures[2]["failures_in_window"], 3);
    assert_eq!(failures[2]["lockout_s"], 300);
    assert!(failures.iter().all(|f| f["uid"].is_u64()));
}

#[test]
fn concurrent_admin_changes_are_all_kept() {
    let people = [
        "biden/biden.jpg",
        "kit_harington/john1.jpeg",
        "rose_leslie/img1.jpg",
    ];
    let Some(photos) = people
        .iter()
        .map(|p| kit_photo(p))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let Some(door) = Door::start() else { return };
    let token = door.login();
    let mut ids = Vec::new();
    for (i, photo) in photos.iter().enumerate() {
        let (status, body) = door.curl(&[
            "-H",
            &bearer(&token),
            "-F",
            &format!("name=person {i}"),
            "-F",
            &format!("photo=@{}", photo.display()),
            "http://door/api/v1/people",
        ]);
        assert_eq!(status, 201, "{body}");
        ids.push(body["person"]["id"].as_str().unwrap().to_string());
    }
    // Each writer renames its own person five times, all at once; every acknowledged change
    // must survive, so the gallery ends at one generation per change and each last name.
    const ROUNDS: usize = 5;
    std::thread::scope(|scope| {
        for (w, id) in ids.iter().enumerate() {
            let (socket, token) = (door.socket.clone(), token.clone());
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    let (status, body) = curl(
                        &socket,
                        &[
                            "-X",
                            "PATCH",
                            "-H",
                            &bearer(&token),
                            "-H",
                            "Content-Type: application/json",
                            "-d",
                            &json!({"name": format!("writer {w} round {round}"),
                                    "valid_until_unix": 4_000_000_000u64 + round as u64})
                            .to_string(),
                            &format!("http://door/api/v1/people/{id}"),
                        ],
                    );
                    assert_eq!(status, 200, "{body}");
                }
            });
        }
    });
    let (status, body) = door.curl(&["-H", &bearer(&token), "http://door/api/v1/people"]);
    assert_eq!(status, 200);
    assert_eq!(body["generation"], (people.len() * (1 + ROUNDS)) as u64);
    for (w, id) in ids.iter().enumerate() {
        let p = body["people"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id.as_str())
            .unwrap();
        assert_eq!(p["name"], format!("writer {w} round {}", ROUNDS - 1));
        assert_eq!(p["valid_until_unix"], 4_000_000_000u64 + ROUNDS as u64 - 1);
    }
    // Bad requests name the problem and change nothing.
    let (status, body) = door.curl(&[
        "-X",
        "PATCH",
        "-H",
        &bearer(&token),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"valid_until_unix": "soon"}"#,
        &format!("http://door/api/v1/people/{}", ids[0]),
    ]);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("valid_until_unix"));
    let (status, body) = door.curl(&[
        "-X",
        "DELETE",
        "-H",
        &bearer(&token),
        "http://door/api/v1/people/nobody",
    ]);
    assert_eq!(status, 404, "{body}");
    let (status, body) = door.curl(&[
        "-H",
        &bearer(&token),
        "-F",
        &format!("name=writer 0 round {}", ROUNDS - 1),
        "-F",
        &format!("photo=@{}", photos[0].display()),
        "http://door/api/v1/people",
    ]);
    assert_eq!(status, 409, "a name already enrolled: {body}");
    let garbage = door.dir.path().join("not-a-photo.jpg");
    std::fs::write(&garbage, b"\xFF\xD8 definitely not a jpeg").unwrap();
    let (status, body) = door.curl(&[
        "-H",
        &bearer(&token),
        "-F",
        "name=garbage",
        "-F",
        &format!("photo=@{}", garbage.display()),
        "http://door/api/v1/people",
    ]);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not-a-photo.jpg"),
        "{body}"
    );
    let (status, st) = door.curl(&["http://door/api/v1/status"]);
    assert_eq!(status, 200);
    assert_eq!(
        st["gallery"]["generation"],
        (people.len() * (1 + ROUNDS)) as u64
    );
    door.stop();
}
