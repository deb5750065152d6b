//! maskgate edge library: the door terminal's recognition pipeline and hardware control.
//!
//! The `edge` binary (`main.rs`) is glue over these modules.

pub mod audit;
pub mod daemon;
pub mod door;
pub mod frame;
pub mod terminal;
