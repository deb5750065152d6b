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

# Wall-clock seconds: frames under qemu on a loaded machine are slow; the frame budget decides.
[enroll]
timeout_secs = 3600

[admin]
socket = "admin.sock"
pin_file = "admin.pin"
max_failures = 3
"#;

impl Door {
    fn start() -> Option<Self> {
        Self::start_with(|_| String::new())
    }

    /// A door whose `[admin]` section gets the lines `admin_lines(dir)` returns.
    fn start_with(admin_lines: impl FnOnce(&Path) -> String) -> Option<Self> {
        let yunet = common::kit("models/yunet_2023mar.fp32.onnx")?;
        let sface = common::kit("models/sface_2021dec.fp32.onnx")?;
        let dir = tempfile::tempdir().unwrap();
        let text =
            common::sface_config(&yunet, &sface, dir.path(), 320) + DOOR + &admin_lines(dir.path());
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
        let mut service = DoorService::new(
            &admin,
            Arc::clone(&gallery),
            Arc::clone(&pipeline),
            audit.clone(),
            model,
            PeerPolicy::owner_only(),
        );
        service.enroll = terminal.enroll.clone();
        let service = Arc::new(service);
        let server = edge::service::serve(Arc::clone(&service), &admin).unwrap();

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
    let mut cmd = Command::new("curl");
    cmd.arg("--unix-socket").arg(socket);
    run_curl(cmd, args)
}

/// Run `cmd` (curl with its transport options) on `args`; the status and the JSON body.
fn run_curl(mut cmd: Command, args: &[&str]) -> (u16, Value) {
    let out = cmd
        .args(["-sS", "--max-time", "600"])
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

    // While the door runs it holds the gallery: the CLI goes through its API, with the PIN.
    let cli = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = common::edge_command()
            .arg("--config")
            .arg(&door.config)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = cli(&["gallery", "remove", &id], "");
    let (_, stderr) = common::output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("door service") && stderr.contains("PIN"),
        "{stderr}"
    );
    let o = cli(
        &["--json", "gallery", "rename", &id, "Barack H. Obama"],
        &format!("{PIN}\n"),
    );
    let (stdout, stderr) = common::output_text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let renamed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(renamed["renamed"], id.as_str());
    let o = cli(&["--json", "gallery", "list"], &format!("{PIN}\n"));
    let (stdout, stderr) = common::output_text(&o);
    assert!(o.status.success(), "{stderr}");
    let listed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(listed["people"][0]["name"], "Barack H. Obama", "{listed}");

    // Removed through the API: the very next approach is judged without them.
    let (status, body) = door.curl(&[
        "-X",
        "DELETE",
        "-H",
        &bearer(&token),
        &format!("http://door/api/v1/people/{id}"),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["removed"]["name"], "Barack H. Obama");
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
    assert_eq!(st["gallery"]["generation"], 3);
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
    assert_eq!(actions, ["enroll", "update", "remove"]);
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
    assert_eq!((g.generation, g.people.len()), (3, 0));
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

/// The events of a server-sent event stream so far: (event, data).
fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut kind = None;
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = Some(k.to_string());
        } else if let Some(d) = line.strip_prefix("data: ") {
            if let (Some(k), Ok(v)) = (kind.take(), serde_json::from_str(d)) {
                out.push((k, v));
            }
        }
    }
    out
}

#[test]
fn enrolled_live_from_the_door_camera_while_it_runs_then_let_in() {
    let names = ["obama/obama.jpg", "obama/obama1.jpg", "obama/obama2.jpg"];
    let Some(paths) = names
        .iter()
        .map(|p| kit_photo(p))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let Some(door) = Door::start() else { return };
    let photos: Vec<RgbImage> = paths.iter().map(|p| load_image(p).unwrap()).collect();
    let token = door.login();
    let url = "http://door/api/v1/people/Barack%20Obama/enroll-live";

    // Nobody of that name and no `create`: refused before the camera is borrowed.
    let (status, body) = door.curl(&["-X", "POST", "-H", &bearer(&token), url]);
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("create"), "{body}");

    let stream = door.dir.path().join("enroll-live.sse");
    let mut admin = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "600", "--unix-socket"])
        .arg(&door.socket)
        .args(["-X", "POST", "-H", &bearer(&token)])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", r#"{"create": true, "frames": 2}"#, url])
        .stdout(std::fs::File::create(&stream).unwrap())
        .spawn()
        .unwrap();
    let events = || sse_events(&std::fs::read_to_string(&stream).unwrap_or_default());
    door.wait_until("the enrollment to borrow the camera", || {
        events().iter().any(|(k, _)| k == "ready")
    });
    // One enrollment at a time.
    let (status, body) = door.curl(&[
        "-X",
        "POST",
        "-H",
        &bearer(&token),
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"create": true}"#,
        url,
    ]);
    assert_eq!(status, 409, "{body}");

    // The person holds still in front of the door: each photo twice, like consecutive video
    // frames. The door keeps deciding every frame; the enrollment judges each one too.
    let mut shown = Vec::new();
    let finished = |e: &[(String, Value)]| e.iter().any(|(k, _)| k == "enrolled" || k == "failed");
    'feed: for _ in 0..4 {
        for (i, photo) in photos.iter().enumerate() {
            for _ in 0..2 {
                if finished(&events()) {
                    break 'feed;
                }
                shown.push(i);
                door.show(photo);
                let judged = shown.len();
                door.wait_until("the enrollment to judge the frame", || {
                    let e = events();
                    finished(&e) || e.iter().filter(|(k, _)| k == "guidance").count() >= judged
                });
            }
        }
    }
    assert!(admin.wait().unwrap().success());
    let events = events();
    let (last, done) = events.last().unwrap();
    assert_eq!(last, "enrolled", "{events:?}");
    assert_eq!(done["templates_added"], 2);
    assert_eq!(done["person"]["name"], "Barack Obama");
    let id = done["person"]["id"].as_str().unwrap().to_string();
    // Each guidance event names its camera frame; the kept ones are the photos to come back with.
    let kept: Vec<usize> = events
        .iter()
        .filter(|(k, v)| k == "guidance" && v["kept"].as_u64() > Some(0))
        .filter(|(_, v)| v["advice"] == "good, keep still" || v["advice"] == "done, thank you")
        .map(|(_, v)| shown[v["frame"].as_u64().unwrap() as usize])
        .collect();
    assert_eq!(kept.len(), 2, "{events:?}");
    assert!(
        door.door_events("unlocked").is_empty(),
        "nobody was enrolled while they stood there"
    );

    // Their next approach, showing a frame the enrollment kept, is let in.
    door.leave();
    door.approach(&photos[kept[0]]);
    let unlocked = door.door_events("unlocked");
    assert_eq!(unlocked.len(), 1, "{unlocked:?}");
    assert_eq!(unlocked[0]["person"]["id"], id.as_str());

    let audit_path = door.dir.path().join("audit.jsonl");
    let (_, _dir) = door.stop();
    let live: Vec<Value> = audit_entries(&audit_path)
        .into_iter()
        .filter(|e| e["action"] == "enroll_live")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["templates"], 2);
    assert!(live[0]["by"]["session"].is_string());
}

#[test]
fn over_tls_every_call_needs_a_session_and_the_certificate_is_checked() {
    let Some(door) = Door::start_with(|dir| {
        // A self-signed certificate, made the way docs/API.md tells an installer to.
        let made = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "30", "-subj", "/CN=door"])
            .args(["-addext", "subjectAltName=DNS:door"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .output()
            .expect("openssl (apt package openssl, installed by scripts/setup.sh)");
        assert!(made.status.success(), "{:?}", common::output_text(&made));
        "listen = \"127.0.0.1:0\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\n".into()
    }) else {
        return;
    };
    let addr = door.server.as_ref().unwrap().tls_addr().unwrap();
    let cert = door.dir.path().join("cert.pem");
    let resolve = format!("door:{}:127.0.0.1", addr.port());
    let https = |args: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.arg("--cacert").arg(&cert).args(["--resolve", &resolve]);
        run_curl(cmd, args)
    };
    let base = format!("https://door:{}", addr.port());

    // Over the network even status needs a session (the socket's group check is not there).
    let (status, body) = https(&[&format!("{base}/api/v1/status")]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = https(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        &json!({ "pin": PIN }).to_string(),
        &format!("{base}/api/v1/session"),
    ]);
    assert_eq!(status, 201, "{body}");
    let auth = bearer(body["token"].as_str().unwrap());
    let (status, body) = https(&["-H", &auth, &format!("{base}/api/v1/status")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["door"]["running"], true);
    let (status, body) = https(&["-H", &auth, &format!("{base}/api/v1/people")]);
    assert_eq!((status, &body["people"]), (200, &json!([])), "{body}");

    // A client that does not trust this certificate gets no answer at all: real TLS.
    let untrusting = Command::new("curl")
        .args(["-sS", "--max-time", "60", "--resolve", &resolve])
        .arg(format!("{base}/api/v1/status"))
        .output()
        .unwrap();
    assert_eq!(
        untrusting.status.code(),
        Some(60),
        "{:?}",
        common::output_text(&untrusting)
    );
    // Plain HTTP on the TLS port is not served.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!("http://127.0.0.1:{}/api/v1/status", addr.port()))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&plain.stdout).to_string();
    assert!(
        !plain.status.success() || code.trim() != "200",
        "plain HTTP answered {code}"
    );

    let audit_path = door.dir.path().join("audit.jsonl");
    let (_, _dir) = door.stop();
    let opened: Vec<Value> = audit_entries(&audit_path)
        .into_iter()
        .filter(|e| e["event"] == "admin_session_opened")
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(opened[0]["remote"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(opened[0]["uid"].is_null());
}
