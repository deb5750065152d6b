//! maskgate trainer library: models, losses, data, training, evaluation, export.
//!
//! The `trainer` binary (`main.rs`) is glue over these modules.

pub mod data;
