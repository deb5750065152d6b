//! Where everything of one demo run lives on disk.

use std::path::PathBuf;

/// Where everything of one demo run lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// Data shared with another run (the ablation's rows); `root/data` when None.
    pub data_root: Option<PathBuf>,
}

impl Layout {
    pub fn data(&self) -> PathBuf {
        self.data_root
            .clone()
            .unwrap_or_else(|| self.root.join("data"))
    }
    pub fn val_bin(&self) -> PathBuf {
        self.data().join("synth_val.bin")
    }
    pub fn door(&self) -> PathBuf {
        self.data().join("door")
    }
    pub fn runs(&self, name: &str) -> PathBuf {
        self.root.join("runs").join(name)
    }
    pub fn checkpoint(&self, name: &str) -> PathBuf {
        self.runs(name).join("checkpoint.safetensors")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model")
    }
    pub fn edge(&self) -> PathBuf {
        self.root.join("edge")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("demo.log")
    }
}
