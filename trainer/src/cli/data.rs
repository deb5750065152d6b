//! `trainer synth`, `trainer pack` and `trainer data ...`: dataset commands.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::sync::Arc;
use trainer::data::{self, FaceSource};

#[derive(Args)]
pub struct SynthArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200)]
    identities: u32,
    #[arg(long, default_value_t = 20)]
    images_per_id: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// easy, default, hard, or a TOML file of difficulty knobs (the [difficulty] table of a
    /// synth.toml, or the bare keys; missing keys take the default).
    #[arg(long, default_value = "default")]
    difficulty: String,
    /// Held-out identities for the verification pairs.
    #[arg(long, default_value_t = 100)]
    val_identities: u32,
    /// Verification pairs (a multiple of 20; 0 = none).
    #[arg(long, default_value_t = 1000)]
    val_pairs: u32,
    /// Also print the training-free pixel-cosine proxy accuracy of the pair files.
    #[arg(long)]
    proxy: bool,
    /// Also write `<out>/door/`: PNG crops of this many people to enroll at a door (unmasked
    /// enrollment photos, unmasked and masked probes), identities disjoint from the rest.
    #[arg(long, default_value_t = 0)]
    door_people: u32,
    /// People in `<out>/door/` who are never enrolled (probes only).
    #[arg(long, default_value_t = 0)]
    door_strangers: u32,
    #[arg(long, default_value_t = 3)]
    door_enroll_images: u32,
    #[arg(long, default_value_t = 2)]
    door_probes: u32,
}

#[derive(Args)]
pub struct PackArgs {
    /// ImageFolder root: one sub-directory per identity.
    folder: PathBuf,
    /// Write a RecordIO pack here (the .idx goes beside it).
    #[arg(long)]
    rec: Option<PathBuf>,
    /// Write a verification .bin of sampled pairs here.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Pairs in the .bin (a multiple of 20).
    #[arg(long, default_value_t = 600)]
    pairs: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Measure decode, augment and batch-assembly throughput.
    Bench(BenchArgs),
    /// Write the masked-probe variant of a verification .bin (first image of each pair masked).
    MaskPairs {
        /// Input .bin (e.g. lfw.bin).
        input: PathBuf,
        /// Output .bin (e.g. lfw_masked.bin).
        #[arg(long)]
        out: PathBuf,
        /// MaskTheFace-style template directory (default: procedural masks).
        #[arg(long)]
        masks: Option<PathBuf>,
        /// Mask both images (masked-vs-masked) instead of the probe only.
        #[arg(long)]
        both: bool,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Summarise a .rec or .bin file.
    Inspect {
        file: PathBuf,
        /// Also write the first 32 images as an 8x4 contact sheet (PNG).
        #[arg(long)]
        sheet: Option<PathBuf>,
        /// Preview masks on the sheet: `procedural` or a MaskTheFace-style directory (training
        /// mode, fixed seed).
        #[arg(long, requires = "sheet")]
        masks: Option<String>,
    },
}

#[derive(Args)]
pub struct BenchArgs {
    /// A .rec to read; without it, synthetic faces are rendered into memory first.
    #[arg(long)]
    rec: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    images: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// MaskTheFace-style template directory (default: procedural masks).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Use AdaFace's crop/low-res/photometric augmentations on top of flip.
    #[arg(long)]
    adaface: bool,
}

fn progress(msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(msg.to_string());
    bar
}

pub fn synth(a: SynthArgs) -> Result<()> {
    let difficulty = if a.difficulty.ends_with(".toml") {
        let text = std::fs::read_to_string(&a.difficulty)
            .with_context(|| format!("reading {}", a.difficulty))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", a.difficulty))?;
        let knobs = match table.get("difficulty") {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => table,
        };
        knobs
            .try_into()
            .with_context(|| format!("difficulty knobs in {}", a.difficulty))?
    } else {
        data::synth::Difficulty::preset(&a.difficulty).with_context(|| {
            format!(
                "unknown difficulty {:?} (easy, default, hard, or a .toml file)",
                a.difficulty
            )
        })?
    };
    let cfg = data::synth::SynthConfig {
        identities: a.identities,
        images_per_id: a.images_per_id,
        seed: a.seed,
        val_identities: a.val_identities,
        val_pairs: a.val_pairs,
        difficulty,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    if a.door_people > 0 {
        let people = data::synth::DoorPeopleConfig {
            enrolled: a.door_people,
            strangers: a.door_strangers,
            enroll_images: a.door_enroll_images,
            probes: a.door_probes,
        };
        let dir = a.out.join("door");
        let files = data::synth::door_people(
            cfg.seed,
            &cfg.difficulty,
            &people,
            &dir,
            &progress("door people"),
        )
        .with_context(|| format!("writing door people to {}", dir.display()))?;
        println!(
            "wrote {} door photos ({} to enroll, {} strangers) to {}",
            files.len(),
            a.door_people,
            a.door_strangers,
            dir.display()
        );
    }
    let out = data::synth::generate(&cfg, &a.out, &progress("rendering"))
        .with_context(|| format!("generating synthetic data in {}", a.out.display()))?;
    println!(
        "wrote {} identities x {} images to {} (+ .idx) in {:.1}s",
        a.identities,
        a.images_per_id,
        out.rec.display(),
        t.elapsed().as_secs_f64()
    );
    for bin in [&out.val_bin, &out.val_masked_bin].into_iter().flatten() {
        println!("wrote {}", bin.display());
        if a.proxy {
            let pairs = data::PairSet::read(bin)?;
            let (acc, same, diff) = data::synth::pixel_proxy_accuracy(&pairs)?;
            println!("  pixel-cosine proxy: accuracy {:.1}%  mean cos same {same:.3} / different {diff:.3}", acc * 100.0);
        }
    }
    Ok(())
}

pub fn pack(a: PackArgs) -> Result<()> {
    if a.rec.is_none() && a.bin.is_none() {
        bail!("nothing to do: give --rec OUT.rec and/or --bin OUT.bin");
    }
    let folder = data::ImageFolder::open(&a.folder)
        .with_context(|| format!("reading {}", a.folder.display()))?;
    println!(
        "{}: {} images of {} identities",
        a.folder.display(),
        folder.len(),
        folder.num_classes()
    );
    if let Some(rec) = &a.rec {
        let (rec, idx) = data::pack::pack_rec(&folder, rec, &progress("packing"))?;
        println!("wrote {} and {}", rec.display(), idx.display());
    }
    if let Some(bin) = &a.bin {
        let set = data::pack::pack_bin(&folder, bin, a.pairs, a.seed, &progress("pairs"))?;
        println!("wrote {} ({} pairs)", bin.display(), set.len());
    }
    Ok(())
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let (source, name): (Arc<dyn FaceSource>, String) = match &a.rec {
        Some(rec) => (
            Arc::new(data::RecordDataset::open(rec)?),
            rec.display().to_string(),
        ),
        None => {
            let d = data::synth::Difficulty::default();
            let faces = (0..a.images)
                .map(|i| {
                    let (img, _) =
                        data::synth::render_face(0, (i / 20) as u64, (i % 20) as u64, &d);
                    let origin = format!("synthetic {i}");
                    Ok(data::EncodedFace {
                        label: (i / 20) as u32,
                        bytes: data::encode_jpeg(&img, 95, &origin)?,
                        origin,
                    })
                })
                .collect::<Result<Vec<_>, data::DataError>>()?;
            let classes = a.images.div_ceil(20);
            (
                Arc::new(data::bench::InMemory { faces, classes }),
                format!("{} synthetic JPEG faces in memory", a.images),
            )
        }
    };
    let masker = match &a.masks {
        Some(dir) => data::mask::Masker::from_dir(dir, Default::default())?,
        None => data::mask::Masker::procedural(Default::default()),
    };
    let augment = if a.adaface {
        data::augment::AugmentConfig::adaface()
    } else {
        Default::default()
    };
    let report = data::bench::run(source, &name, a.images, a.batch, augment, masker)?;
    print!("{report}");
    Ok(())
}

pub fn mask_pairs(
    input: PathBuf,
    out: PathBuf,
    masks: Option<PathBuf>,
    both: bool,
    seed: u64,
) -> Result<()> {
    let set = data::PairSet::read(&input)?;
    let masker = match &masks {
        Some(dir) => data::mask::Masker::from_dir(dir, Default::default())?,
        None => data::mask::Masker::procedural(Default::default()),
    };
    let masked = data::pack::mask_pairs(&set, &masker, seed, both)
        .with_context(|| format!("masking {}", input.display()))?;
    masked.write(&out)?;
    println!(
        "wrote {} ({} pairs, {} masked)",
        out.display(),
        masked.len(),
        if both {
            "both images"
        } else {
            "first image of each pair"
        }
    );
    Ok(())
}

pub fn inspect(file: PathBuf, sheet: Option<PathBuf>, masks: Option<String>) -> Result<()> {
    let mut encoded: Vec<(Vec<u8>, String)> = Vec::new();
    match file.extension().and_then(|e| e.to_str()) {
        Some("rec") => {
            let ds = data::RecordDataset::open(&file)?;
            println!(
                "{}: {} images, {} classes, key-0 meta record: {}",
                file.display(),
                ds.len(),
                ds.num_classes(),
                if ds.has_meta {
                    "yes"
                } else {
                    "no (shuffled pack)"
                }
            );
            if !ds.is_empty() {
                let first = ds.read(0)?;
                let img = data::decode_face(&first.bytes, &first.origin)?;
                println!(
                    "first image: label {}, {} bytes, {}x{}",
                    first.label,
                    first.bytes.len(),
                    img.width(),
                    img.height()
                );
            }
            for i in 0..ds.len().min(32) {
                let f = ds.read(i)?;
                encoded.push((f.bytes, f.origin));
            }
        }
        Some("bin") => {
            let set = data::PairSet::read(&file)?;
            let same = set.issame.iter().filter(|s| **s).count();
            println!(
                "{}: {} pairs ({} same, {} different), {} images",
                file.display(),
                set.len(),
                same,
                set.len() - same,
                set.images.len()
            );
            if let Some((a, _)) = set.pair(0) {
                let img = data::decode_face(a, "pair 0")?;
                println!(
                    "first image: {} bytes, {}x{}",
                    a.len(),
                    img.width(),
                    img.height()
                );
            }
            encoded.extend(
                set.images
                    .iter()
                    .take(32)
                    .enumerate()
                    .map(|(i, b)| (b.clone(), format!("image {i}"))),
            );
        }
        _ => bail!("{}: expected a .rec or .bin file", file.display()),
    }
    if let Some(sheet) = sheet {
        let side = data::FACE_SIZE;
        let mut canvas = image::RgbImage::new(8 * side, 4 * side);
        let masker = match masks.as_deref() {
            None => None,
            Some("procedural") => Some(data::mask::Masker::procedural(Default::default())),
            Some(dir) => Some(data::mask::Masker::from_dir(
                std::path::Path::new(dir),
                Default::default(),
            )?),
        };
        for (k, (bytes, origin)) in encoded.iter().enumerate() {
            let mut img = data::decode_face(bytes, origin)?;
            if let Some(m) = &masker {
                let mut rng = data::synth::rng_for(&[k as u64]);
                m.apply(
                    &mut img,
                    &shared::ARCFACE_TEMPLATE_112,
                    &mut rng,
                    data::mask::MaskMode::Train,
                );
            }
            image::imageops::replace(
                &mut canvas,
                &img,
                ((k % 8) as u32 * side) as i64,
                ((k / 8) as u32 * side) as i64,
            );
        }
        canvas
            .save(&sheet)
            .with_context(|| format!("writing {}", sheet.display()))?;
        println!("wrote {}", sheet.display());
    }
    Ok(())
}

/// Run one `trainer data ...` subcommand.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Bench(a) => bench(a),
        DataCommand::MaskPairs {
            input,
            out,
            masks,
            both,
            seed,
        } => mask_pairs(input, out, masks, both, seed),
        DataCommand::Inspect { file, sheet, masks } => inspect(file, sheet, masks),
    }
}
