//! The `trainer` subcommands, one module per area; `main.rs` only parses and dispatches.

pub mod data;
pub mod eval;
pub mod export;
pub mod models;
pub mod train;
