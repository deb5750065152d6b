//! The training loader: decode, mask and augment in parallel into batches, with prefetch.
//!
//! Determinism: every random choice for a sample (flip, whether to mask, the mask, the other
//! augmentations) comes from a generator seeded by `(seed, epoch, dataset index)`, and the epoch
//! order from `(seed, epoch)`. Batches are therefore identical whatever the number of threads or
//! their timing, and a sample is augmented the same way whichever batch or rank it lands in.
//!
//! Each sample yields two views that differ only by the mask: the student input (masked with
//! probability pMask) and, when `teacher_view` is on, the same augmented image unmasked for the
//! MaskInv teacher (METHODS §5).

use super::augment::AugmentConfig;
use super::mask::{MaskMode, Masker};
use super::synth::rng_for;
use super::{decode_face, DataError, FaceSource};
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use shared::{PreprocessSpec, ARCFACE_TEMPLATE_112};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How batches are formed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Drop the last incomplete batch (training); keep it for evaluation passes.
    pub drop_last: bool,
    /// This process's shard: it sees every `world_size`-th sample of the epoch order.
    pub rank: usize,
    pub world_size: usize,
    /// Decode/augment threads; 0 = one per core.
    pub workers: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    pub augment: AugmentConfig,
    /// Also produce the unmasked teacher view.
    pub teacher_view: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            seed: 0,
            shuffle: true,
            drop_last: true,
            rank: 0,
            world_size: 1,
            workers: 0,
            prefetch: 2,
            augment: AugmentConfig::default(),
            teacher_view: true,
        }
    }
}

/// One batch in plain buffers: inputs are NCHW f32 from `shared::PreprocessSpec`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Student input: augmented, masked where `masked[i]`.
    pub student: Vec<f32>,
    /// The same augmented images unmasked (the teacher's view), when enabled.
    pub teacher: Option<Vec<f32>>,
    pub labels: Vec<i64>,
    /// Whether sample i was masked (labels for a mask head).
    pub masked: Vec<bool>,
    /// Dataset index and flip of each sample: the key of a cached teacher embedding. The key is
    /// exact when the augmentation is flip-only (the default); with crop, low-res, blur or jitter
    /// on, the teacher must run on `teacher` instead.
    pub indices: Vec<usize>,
    pub flipped: Vec<bool>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The batch as tensors on `device`: the one place the data module meets libtorch.
    pub fn to_tensors(&self, device: tch::Device) -> BatchTensors {
        let n = self.len() as i64;
        let side = super::FACE_SIZE as i64;
        let images = |v: &[f32]| {
            tch::Tensor::from_slice(v)
                .view([n, 3, side, side])
                .to_device(device)
        };
        BatchTensors {
            student: images(&self.student),
            teacher: self.teacher.as_deref().map(images),
            labels: tch::Tensor::from_slice(&self.labels).to_device(device),
            masked: tch::Tensor::from_slice(&self.masked).to_device(device),
        }
    }
}

/// [`Batch`] on a device.
#[derive(Debug)]
pub struct BatchTensors {
    pub student: tch::Tensor,
    pub teacher: Option<tch::Tensor>,
    pub labels: tch::Tensor,
    pub masked: tch::Tensor,
}

struct Inner {
    source: Arc<dyn FaceSource>,
    cfg: LoaderConfig,
    masker: Option<Masker>,
    spec: PreprocessSpec,
    pool: rayon::ThreadPool,
    /// Image buffers of batches given back through [`Loader::recycle`]: reusing them saves the
    /// page faults of fresh multi-megabyte allocations.
    spare: std::sync::Mutex<Vec<Vec<f32>>>,
}

/// A reusable loader over a [`FaceSource`]; cheap to clone.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

/// What a batch records about each sample besides its pixels.
struct SampleMeta {
    label: i64,
    masked: bool,
    flipped: bool,
}

impl Loader {
    /// `masker` = None trains without masks.
    pub fn new(
        source: Arc<dyn FaceSource>,
        cfg: LoaderConfig,
        masker: Option<Masker>,
    ) -> Result<Self, DataError> {
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch size must be at least 1".into()));
        }
        if cfg.world_size == 0 || cfg.rank >= cfg.world_size {
            return Err(DataError::Config(format!(
                "rank {} is not in 0..world size {}",
                cfg.rank, cfg.world_size
            )));
        }
        if source.is_empty() {
            return Err(DataError::Config("the dataset is empty".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.workers)
            .thread_name(|i| format!("loader-{i}"))
            .build()
            .map_err(|e| DataError::Config(format!("cannot start loader threads: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                cfg,
                masker,
                spec: PreprocessSpec::arcface_112(),
                pool,
                spare: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.inner.cfg
    }
    pub fn num_classes(&self) -> usize {
        self.inner.source.num_classes()
    }

    /// This rank's dataset indices for `epoch`, in order. Every rank gets the same count.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<usize> {
        let cfg = &self.inner.cfg;
        let n = self.inner.source.len();
        let mut order: Vec<usize> = (0..n).collect();
        if cfg.shuffle {
            order.shuffle(&mut rng_for(&[cfg.seed, epoch, 0x5_0FF1E]));
        }
        let per_rank = n / cfg.world_size;
        order
            .into_iter()
            .skip(cfg.rank)
            .step_by(cfg.world_size)
            .take(per_rank)
            .collect()
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (
            self.inner.source.len() / self.inner.cfg.world_size,
            self.inner.cfg.batch_size,
        );
        if self.inner.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// Build the batch of the given dataset indices (synchronously, on the loader's threads).
    pub fn load_batch(&self, epoch: u64, indices: &[usize]) -> Result<Batch, DataError> {
        let inner = &self.inner;
        let len = inner.spec.input_len();
        // Workers write straight into the batch buffers: no per-sample copies to assemble.
        let mut student = inner.buffer(len * indices.len());
        let mut teacher = inner
            .cfg
            .teacher_view
            .then(|| inner.buffer(len * indices.len()));
        let meta: Vec<SampleMeta> = inner.pool.install(|| match teacher.as_mut() {
            Some(t) => student
                .par_chunks_mut(len)
                .zip(t.par_chunks_mut(len))
                .zip(indices.par_iter())
                .map(|((s, t), &i)| inner.prepare_into(epoch, i, s, Some(t)))
                .collect::<Result<_, _>>(),
            None => student
                .par_chunks_mut(len)
                .zip(indices.par_iter())
                .map(|(s, &i)| inner.prepare_into(epoch, i, s, None))
                .collect::<Result<_, _>>(),
        })?;
        Ok(Batch {
            student,
            teacher,
            labels: meta.iter().map(|m| m.label).collect(),
            masked: meta.iter().map(|m| m.masked).collect(),
            indices: indices.to_vec(),
            flipped: meta.iter().map(|m| m.flipped).collect(),
        })
    }

    /// The per-sample work of [`Loader::load_batch`] minus reading and decoding: mask and augment
    /// an already decoded face as dataset image `index` of `epoch` would be. Returns whether it
    /// was masked and flipped. (For benchmarks and for callers that hold decoded images.)
    pub fn augment_into(
        &self,
        img: &image::RgbImage,
        epoch: u64,
        index: usize,
        student: &mut [f32],
        teacher: Option<&mut [f32]>,
    ) -> Result<(bool, bool), DataError> {
        let meta = self
            .inner
            .augment_into(img, "decoded image", epoch, index, student, teacher)?;
        Ok((meta.masked, meta.flipped))
    }

    /// Give a consumed batch's buffers back for reuse (optional; call it once the batch has been
    /// copied to the device, e.g. after [`Batch::to_tensors`]).
    pub fn recycle(&self, batch: Batch) {
        if let Ok(mut spare) = self.inner.spare.lock() {
            let keep = 2 * (self.inner.cfg.prefetch + 2);
            for v in std::iter::once(batch.student).chain(batch.teacher) {
                if spare.len() < keep {
                    spare.push(v);
                }
            }
        }
    }

    /// Iterate over this rank's batches of `epoch`, prepared `prefetch` batches ahead on a
    /// background thread. Dropping the iterator stops the work.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let loader = self.clone();
        let (tx, rx) = sync_channel(self.inner.cfg.prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("loader-prefetch".into())
            .spawn(move || {
                let cfg = &loader.inner.cfg;
                let indices = loader.epoch_indices(epoch);
                for chunk in indices.chunks(cfg.batch_size) {
                    if cfg.drop_last && chunk.len() < cfg.batch_size {
                        break;
                    }
                    let batch = loader.load_batch(epoch, chunk);
                    let failed = batch.is_err();
                    if tx.send(batch).is_err() || failed {
                        break;
                    }
                }
            });
        match handle {
            Ok(h) => EpochIter {
                rx: Some(rx),
                handle: Some(h),
                failed: None,
            },
            Err(e) => EpochIter {
                rx: None,
                handle: None,
                failed: Some(DataError::Config(format!(
                    "cannot start the prefetch thread: {e}"
                ))),
            },
        }
    }
}

impl Inner {
    /// A buffer of `n` values, recycled when one is available (its contents are overwritten).
    fn buffer(&self, n: usize) -> Vec<f32> {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        match spare {
            Some(mut v) => {
                v.resize(n, 0.0);
                v
            }
            None => vec![0f32; n],
        }
    }

    /// Read and decode dataset image `index`, then [`Inner::augment_into`].
    fn prepare_into(
        &self,
        epoch: u64,
        index: usize,
        student: &mut [f32],
        teacher: Option<&mut [f32]>,
    ) -> Result<SampleMeta, DataError> {
        let face = self.source.read(index)?;
        let img = decode_face(&face.bytes, &face.origin)?;
        let mut meta = self.augment_into(&img, &face.origin, epoch, index, student, teacher)?;
        meta.label = face.label as i64;
        Ok(meta)
    }

    /// Mask (with probability pMask) and augment a decoded face into `student`, and the same
    /// augmentation without the mask into `teacher`. The label is left 0 for the caller.
    fn augment_into(
        &self,
        img: &image::RgbImage,
        origin: &str,
        epoch: u64,
        index: usize,
        student: &mut [f32],
        teacher: Option<&mut [f32]>,
    ) -> Result<SampleMeta, DataError> {
        let mut rng = rng_for(&[self.cfg.seed, epoch, index as u64, 0xA06]);
        let plan = self.cfg.augment.draw(&mut rng, img.width());
        let masker = self
            .masker
            .as_ref()
            .filter(|m| rng.gen::<f32>() < m.cfg.p_mask);
        let to_input = |im: &image::RgbImage, out: &mut [f32]| {
            let v = self
                .spec
                .input_from_aligned(im, plan.flip)
                .map_err(|e| DataError::Config(format!("{origin}: {e}")))?;
            out.copy_from_slice(&v);
            Ok::<(), DataError>(())
        };
        let mut view = img.clone();
        if let Some(m) = masker {
            m.apply(&mut view, &ARCFACE_TEMPLATE_112, &mut rng, MaskMode::Train);
        }
        plan.apply(&mut view);
        to_input(&view, student)?;
        if let Some(t) = teacher {
            if masker.is_some() {
                let mut clean = img.clone();
                plan.apply(&mut clean);
                to_input(&clean, t)?;
            } else {
                t.copy_from_slice(student);
            }
        }
        Ok(SampleMeta {
            label: 0,
            masked: masker.is_some(),
            flipped: plan.flip,
        })
    }
}

/// Batches of one epoch; see [`Loader::epoch`].
pub struct EpochIter {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    failed: Option<DataError>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Closing the channel makes a blocked producer's send fail, so the join is prompt.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_from_partial_toml() {
        let cfg: LoaderConfig =
            toml::from_str("batch_size = 64\nworld_size = 2\n[augment]\ncrop_prob = 0.2\n")
                .unwrap();
        assert_eq!(
            (cfg.batch_size, cfg.world_size, cfg.augment.crop_prob),
            (64, 2, 0.2)
        );
        assert!(
            cfg.augment.flip && cfg.teacher_view,
            "unspecified fields keep their defaults"
        );
        let mask: crate::data::mask::MaskConfig = toml::from_str("p_mask = 0.3").unwrap();
        assert_eq!((mask.p_mask, mask.shift_px), (0.3, 3.0));
    }
}
