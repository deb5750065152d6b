//! maskgate trainer library: models, losses, data, training, evaluation, export.
//!
//! The `trainer` binary (`main.rs`) is glue over these modules.
//! - [`model`]: iResNet / MobileFaceNet backbones (arcface_torch key names), the CPU `tiny`
//!   preset, and the training-only transformer branch.
//! - [`loss`]: ArcFace, CosFace, ElasticFace(+), AdaFace heads; USS; MaskInv distillation.
//! - [`data`]: RecordIO, verification .bin, ImageFolder, the built-in synthetic faces, masks,
//!   augmentations and the parallel loader.
//! - [`checkpoint`]: atomic safetensors save/load of VarStores.
//! - [`eval`]: the insightface verification protocol, TAR@FAR, ROC; [`calibrate`]: thresholds
//!   with a Clopper-Pearson guarantee.
//! - [`export`]: ONNX export checked against tch, quantised variants, signed bundles.

pub mod bench;
pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod export;
pub mod loss;
pub mod model;
pub mod train;
