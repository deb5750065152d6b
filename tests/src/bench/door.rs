//! Section 4: peak memory of the door terminal (`edge run --dry-run` over a directory of
//! frames), with the 20 synthetic door people enrolled through `edge enroll`, and with the same
//! gallery padded to 10,000 people.

use super::models::Recogniser;
use super::table::{Section, Table};
use super::Bench;
use anyhow::{bail, Context, Result};
use edge::{GalleryKey, GalleryStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Frames each visitor stands in front of the camera, and blank frames between visitors.
const VISITOR_FRAMES: usize = 4;
const GAP_FRAMES: usize = 2;

/// What one run of the door cost.
#[derive(Debug, Clone)]
pub struct DoorRun {
    pub people: usize,
    pub gallery_bytes: u64,
    pub frames: usize,
    pub wall_s: f64,
    /// Unlocks for the enrolled visitor in front of the camera.
    pub right: usize,
    /// Unlocks for anyone else (a stranger, or the wrong name).
    pub wrong: usize,
    pub peak_rss_kib: u64,
}

/// GNU time, which reports the peak resident set of the command it runs.
pub const GNU_TIME: &str = "/usr/bin/time";

/// Runs `program args...` under GNU time and returns (its stdout, the peak resident set in
/// KiB). GNU time is a small process that forks the command and reads its rusage, so the figure
/// is the command's own: a child spawned straight from this (large) process would inherit our
/// high-water mark across exec and report it instead.
pub fn run_with_peak_rss(
    program: &Path,
    args: &[&std::ffi::OsStr],
    report: &Path,
    log: &Path,
) -> Result<(String, u64)> {
    if !Path::new(GNU_TIME).is_file() {
        bail!("{GNU_TIME} is missing: the memory section needs GNU time (apt-get install time)");
    }
    let _ = std::fs::remove_file(report);
    let mut cmd = Command::new(GNU_TIME);
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(report)
        .arg(program)
        .args(args);
    let stdout = crate::tools::run_logged(&mut cmd, log)?;
    let text = std::fs::read_to_string(report)
        .with_context(|| format!("reading GNU time's report {}", report.display()))?;
    let kib = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .with_context(|| format!("{}: no peak RSS figure in {text:?}", report.display()))?;
    Ok((stdout, kib))
}

/// Person directories under `door` whose names start with `prefix`, sorted.
fn door_dirs(door: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(door)
        .with_context(|| format!("listing {}", door.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

fn name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The recogniser section of the door's edge.toml and a label for the report: the demo's
/// signed bundle (calibrated thresholds) when the demo ran, else the maskgate f32 ONNX file with
/// a placeholder threshold. The bundle and its key are copied into `dir` first.
fn model_section(bench: &Bench, dir: &Path, r: &Recogniser) -> Result<(String, String)> {
    let bundle = bench.opts.demo.join("student.mgb");
    let pubkey = bench.opts.demo.join("keys/demo.pub");
    if bundle.is_file() && pubkey.is_file() {
        let (b, k) = (dir.join("student.mgb"), dir.join("demo.pub"));
        for (from, to) in [(&bundle, &b), (&pubkey, &k)] {
            std::fs::copy(from, to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        }
        let text = "[model.bundle]\npath = \"student.mgb\"\ntrusted_key_files = [\"demo.pub\"]\n";
        return Ok((
            text.to_string(),
            format!("the demo's signed bundle {}", super::shown(&bundle)),
        ));
    }
    let text = r.onnx_section(0.5)?;
    Ok((
        text,
        format!("{} with a placeholder threshold (no demo run)", r.label()),
    ))
}

/// The door's edge.toml: `model` (a [model.*] table) on aligned crops, a gallery, frames from
/// a directory as fast as they are read, a simulated relay, an audit log.
fn write_config(dir: &Path, model: &str, gallery: &str) -> Result<PathBuf> {
    let text = crate::demo::door_config_toml("maskgate-bench", model, gallery);
    let path = dir.join(format!("edge-{}.toml", gallery.trim_end_matches(".bin")));
    shared::atomic_write(&path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Copies the gallery at `from` to `to` (same key) with people added until it holds `total`,
/// each with one random unit template of the gallery's dimension.
pub fn pad_gallery(from: &Path, to: &Path, key: &Path, total: usize) -> Result<usize> {
    let key = GalleryKey::read_file(key).with_context(|| format!("reading {}", key.display()))?;
    let src = GalleryStore::new(from, key.clone());
    let mut g = src
        .load()
        .with_context(|| format!("opening {}", from.display()))?
        .with_context(|| format!("{} does not exist", from.display()))?;
    let dim = g.embedding_dim as usize;
    let mut rng = StdRng::seed_from_u64(0x6d61_736b_6761_7465);
    let mut i = 0u64;
    while g.people.len() < total {
        let v: Vec<f32> = (0..dim).map(|_| rng.gen_range(-0.5f32..0.5)).collect();
        let embedding =
            shared::Embedding::normalize(&v).context("normalising a padding embedding")?;
        let t = shared::Template {
            embedding,
            quality: 1.0,
            masked: None,
            created_unix: 0,
        };
        let mut id = [0xB7u8; 16];
        id[8..].copy_from_slice(&i.to_le_bytes());
        let p = shared::PersonRecord::new(shared::PersonId(id), format!("padding {i}"), vec![t], 0)
            .context("building a padding person")?;
        g.people.push(p);
        i += 1;
    }
    GalleryStore::new(to, key)
        .replace(&mut g)
        .with_context(|| format!("writing {}", to.display()))?;
    Ok(g.people.len())
}

/// Section 4.
pub fn run(bench: &mut Bench, recognisers: &[Recogniser]) -> Result<Section> {
    let r = recognisers
        .iter()
        .find(|r| r.maskgate && r.variant == "f32" && !r.input.is_empty())
        .context("no maskgate f32 recogniser for the door")?;
    let door = bench.synth_dir().join("door");
    let dir = bench.opts.work.join("door");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (model, model_label) = model_section(bench, &dir, r)?;
    let small = write_config(&dir, &model, "gallery.bin")?;

    bench.progress("door: enroll 20 people");
    let people = door_dirs(&door, "person_")?;
    if people.is_empty() {
        bail!(
            "{} has no person_* directories (trainer synth --door-people)",
            door.display()
        );
    }
    for p in &people {
        let images: Vec<PathBuf> = (0..8)
            .map(|k| p.join(format!("enroll_{k}.png")))
            .filter(|f| f.is_file())
            .collect();
        let mut cmd = Command::new(&bench.tools.edge);
        cmd.arg("--config")
            .arg(&small)
            .args(["enroll", "--name", &name_of(p)])
            .args(&images);
        bench.run(&mut cmd)?;
    }

    // Visitors: every person (masked probe for every other one), then the strangers.
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames)?;
    let mut visitors: Vec<PathBuf> = people
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.join(if i % 2 == 0 {
                "probe_0_masked.png"
            } else {
                "probe_0.png"
            })
        })
        .collect();
    visitors.extend(
        door_dirs(&door, "stranger_")?
            .iter()
            .map(|p| p.join("probe_0_masked.png")),
    );
    let blank = image::RgbImage::from_pixel(112, 112, image::Rgb([128, 128, 128]));
    // frame index -> the visitor's name when one stands in front of the camera
    let mut owner: Vec<Option<String>> = Vec::new();
    let mut n = 0usize;
    for v in &visitors {
        let who = v.parent().map(name_of).unwrap_or_default();
        let bytes = std::fs::read(v).with_context(|| format!("reading {}", v.display()))?;
        for k in 0..VISITOR_FRAMES + GAP_FRAMES {
            let path = frames.join(format!("{n:05}.png"));
            if k < VISITOR_FRAMES {
                std::fs::write(&path, &bytes)
            } else {
                blank.save(&path).map_err(std::io::Error::other)
            }
            .with_context(|| format!("writing {}", path.display()))?;
            owner.push((k < VISITOR_FRAMES).then(|| who.clone()));
            n += 1;
        }
    }

    bench.progress("door: pad the gallery");
    let big_n = bench.budget.big_gallery;
    pad_gallery(
        &dir.join("gallery.bin"),
        &dir.join("gallery_big.bin"),
        &dir.join("gallery.key"),
        big_n,
    )?;
    let big = write_config(&dir, &model, "gallery_big.bin")?;

    let mut runs = Vec::new();
    for (config, gallery, count) in [
        (&small, "gallery.bin", people.len()),
        (&big, "gallery_big.bin", big_n),
    ] {
        bench.progress(&format!("door: edge run --dry-run ({count} people)"));
        let _ = std::fs::remove_file(dir.join("audit.jsonl"));
        let args: Vec<&std::ffi::OsStr> = vec![
            "--config".as_ref(),
            config.as_os_str(),
            "--json".as_ref(),
            "run".as_ref(),
            "--dry-run".as_ref(),
        ];
        let t = Instant::now();
        let (stdout, rss) = run_with_peak_rss(
            &bench.tools.edge,
            &args,
            &dir.join("peak_rss.txt"),
            &bench.log_path(),
        )?;
        let wall_s = t.elapsed().as_secs_f64();
        let doc: Value =
            serde_json::from_str(&stdout).context("parsing `edge --json run --dry-run`")?;
        let (mut right, mut wrong) = (0, 0);
        for e in doc["events"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            if e["event"] != "unlocked" {
                continue;
            }
            let visitor = e["frame"]
                .as_u64()
                .and_then(|f| owner.get(f as usize).cloned().flatten());
            match visitor {
                Some(v) if v.starts_with("person_") && e["person"]["name"] == v.as_str() => {
                    right += 1
                }
                _ => wrong += 1,
            }
        }
        runs.push(DoorRun {
            people: count,
            gallery_bytes: std::fs::metadata(dir.join(gallery)).map_or(0, |m| m.len()),
            frames: n,
            wall_s,
            right,
            wrong,
            peak_rss_kib: rss,
        });
    }

    let mut table = Table::new(&[
        "gallery (people)",
        "gallery file (KiB)",
        "frames",
        "wall (s)",
        "frames per second",
        "unlocks: right person / other",
        "peak RSS (MiB)",
    ]);
    for d in &runs {
        table.push(vec![
            format!("{}", d.people),
            format!("{:.0}", d.gallery_bytes as f64 / 1024.0),
            format!("{}", d.frames),
            format!("{:.2}", d.wall_s),
            format!("{:.1}", d.frames as f64 / d.wall_s),
            format!("{} / {}", d.right, d.wrong),
            format!("{:.1}", d.peak_rss_kib as f64 / 1024.0),
        ])?;
    }
    Ok(Section {
        title: "Peak memory of the door terminal".into(),
        about: format!(
            "Peak resident set (the kernel's high-water mark, `/usr/bin/time -f %M`) of one whole `edge run --dry-run`: load the recogniser ({}) and the \
             encrypted gallery, then decide on {n} aligned 112x112 frames read from a directory \
             as fast as possible ({} visitors, {VISITOR_FRAMES} frames each with \
             {GAP_FRAMES} blank frames between them; half the enrolled visitors masked), relay \
             simulated, audit log written. First row: the {} synthetic door people enrolled with \
             `edge enroll`; second row: the same gallery padded to {big_n} people with random \
             unit templates (written through the edge's gallery store, so it is a real \
             encrypted gallery file).",
            model_label,
            visitors.len(),
            people.len()
        ),
        table,
        notes: vec![format!(
            "Frames, configs and galleries: {} (regenerated by every run). The unlock \
             column shows that the loop decided as the door would (out of {} enrolled \
             visitors, plus strangers); it is not an accuracy figure: the door people here \
             are the bench's own synthetic set, and the demo's report measures accuracy.",
            super::shown(&dir),
            people.len()
        )],
    })
}
