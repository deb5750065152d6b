//! Checkpoints: VarStores as safetensors files, replaced atomically.
//!
//! A crash mid-save must never leave a half-written checkpoint: the file is written to a temp
//! name in the same directory, fsynced, renamed over the target and the directory is fsynced
//! (the recipe of `shared::atomic`). Loading checks every variable's presence and shape and names
//! the file and the key on failure; extra keys in the file are ignored, so a converted
//! arcface_torch checkpoint with `num_batches_tracked` entries still loads.
//!
//! Several stores (backbone, heads, USS, KD projection) can share one file, their keys prefixed
//! with `<store>/`, so a checkpoint is consistent as a whole.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use tch::{nn::VarStore, Tensor};

/// Errors of checkpoint I/O, each naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors checkpoint: {source}")]
    Format {
        path: PathBuf,
        source: tch::TchError,
    },
    #[error("{path}: missing tensor {key:?}")]
    Missing { path: PathBuf, key: String },
    #[error("{path}: tensor {key:?} has shape {found:?}, the model expects {expected:?}")]
    Shape {
        path: PathBuf,
        key: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error("{path}: checkpoint file names must end in .safetensors")]
    Extension { path: PathBuf },
    #[error("{path}: store name {name:?} is empty, repeated or contains '/'")]
    StoreName { path: PathBuf, name: String },
}

/// Saves every variable of `vs` under its own name.
pub fn save_var_store(vs: &VarStore, path: &Path) -> Result<(), CheckpointError> {
    let named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    write_atomic(path, &named)
}

/// Loads `path` into `vs` (exact values; shapes must match).
pub fn load_var_store(vs: &mut VarStore, path: &Path) -> Result<(), CheckpointError> {
    let file = read_tensors(path)?;
    copy_into(vs, &file, "", path)
}

/// Saves several stores in one file, keys prefixed `<name>/`.
pub fn save_stores(path: &Path, stores: &[(&str, &VarStore)]) -> Result<(), CheckpointError> {
    check_names(path, stores.iter().map(|(n, _)| *n))?;
    let mut named = Vec::new();
    for (name, vs) in stores {
        named.extend(
            vs.variables()
                .into_iter()
                .map(|(k, t)| (format!("{name}/{k}"), t)),
        );
    }
    write_atomic(path, &named)
}

/// Loads stores saved by [`save_stores`]; every variable of every given store must be present.
pub fn load_stores(
    path: &Path,
    stores: &mut [(&str, &mut VarStore)],
) -> Result<(), CheckpointError> {
    check_names(path, stores.iter().map(|(n, _)| *n))?;
    let file = read_tensors(path)?;
    for (name, vs) in stores.iter_mut() {
        copy_into(vs, &file, &format!("{name}/"), path)?;
    }
    Ok(())
}

fn check_names<'a>(
    path: &Path,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), CheckpointError> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if name.is_empty() || name.contains('/') || !seen.insert(name) {
            return Err(CheckpointError::StoreName {
                path: path.to_path_buf(),
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, CheckpointError> {
    if !path.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "checkpoint file not found");
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        });
    }
    check_extension(path)?;
    let tensors = Tensor::read_safetensors(path).map_err(|source| CheckpointError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(tensors.into_iter().collect())
}

fn copy_into(
    vs: &mut VarStore,
    file: &HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<(), CheckpointError> {
    for (key, var) in vs.variables() {
        let full = format!("{prefix}{key}");
        let src = file.get(&full).ok_or_else(|| CheckpointError::Missing {
            path: path.to_path_buf(),
            key: full.clone(),
        })?;
        if src.size() != var.size() {
            return Err(CheckpointError::Shape {
                path: path.to_path_buf(),
                key: full,
                expected: var.size(),
                found: src.size(),
            });
        }
        tch::no_grad(|| var.shallow_clone().f_copy_(src)).map_err(|source| {
            CheckpointError::Format {
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

fn check_extension(path: &Path) -> Result<(), CheckpointError> {
    if path.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        return Err(CheckpointError::Extension {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Temp file in the same directory, fsync, rename, fsync the directory.
fn write_atomic(path: &Path, named: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    check_extension(path)?;
    let io_err = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Ends in .safetensors so tch picks the format; dot-prefixed so globs skip it.
    let tmp = dir.join(format!(".{name}.tmp.{}.safetensors", std::process::id()));
    let cpu: Vec<(String, Tensor)> = named
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    let result = (|| {
        Tensor::write_safetensors(&cpu, &tmp).map_err(|source| match source {
            tch::TchError::Io(e) => io_err(e),
            source => CheckpointError::Format {
                path: path.to_path_buf(),
                source,
            },
        })?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)?;
        File::open(&dir).and_then(|f| f.sync_all()).map_err(io_err)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
