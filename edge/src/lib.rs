//! maskgate edge library: the door terminal's recognition pipeline and hardware control.
//!
//! The `edge` binary (`main.rs`) is glue over these modules. Recognition, one module per stage:
//! [`config`] (edge.toml) -> [`model`] (tract plans, built once) -> [`detect`] (YuNet, or
//! [`crop`] for pre-aligned crops) ->
//! [`align`] (shared alignment) -> [`quality`] (the gate) -> [`embed`] (recogniser) ->
//! [`matcher`] (1:N, 1:1) over the encrypted [`gallery`]; [`pipeline`] chains them; [`photo`]
//! reads the photos people hand in.
//! The door: [`frame`] sources -> [`daemon`] (threads, queues, signals) -> [`door`] (policy,
//! relay and inputs over embedded-hal; the policy follows faces as [`track`]s) with every
//! decision in the hash-chained [`audit`] log;
//! [`recognizer`] plugs the pipeline into the daemon; [`replay`] decides every frame of a
//! recording in lockstep; [`terminal`] reads the door's config; [`machine`] names the machine
//! benchmark figures come from; [`state`] records the newest gallery generation and bundle
//! version seen (rollback protection); [`service`] is `edge run` as one door service that owns
//! all of it, with its admin API, and [`control`] what that API may see and ask of the door;
//! [`enrollment`] steps a live enrollment (the CLI's camera, or frames lent by the door's).

pub mod align;
pub mod audit;
pub mod config;
pub mod control;
pub mod crop;
pub mod daemon;
pub mod detect;
pub mod door;
pub mod embed;
pub mod enrollment;
pub mod frame;
pub mod gallery;
pub mod machine;
pub mod matcher;
pub mod model;
pub mod photo;
pub mod pipeline;
pub mod quality;
pub mod recognizer;
pub mod replay;
pub mod service;
pub mod state;
pub mod terminal;
pub mod track;

pub use config::Config;
pub use detect::{BBox, DetectedFace, Detector};
pub use embed::{DecisionThresholds, FaceEmbedding, Recognizer};
pub use gallery::{GalleryKey, GalleryStore};
pub use matcher::Matcher;
pub use pipeline::{FaceResult, Identification, Pipeline, PipelineError, Verification};
pub use quality::{QualityGate, QualityVerdict, Rejection};
