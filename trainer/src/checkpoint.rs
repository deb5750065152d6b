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
    #[error("{path}: could not write checkpoint: {source}")]
    Write {
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

/// Saves arbitrary named tensors (stores, optimiser buffers, metadata) in one atomic file.
pub fn save_named(path: &Path, named: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    write_atomic(path, named)
}

/// Every tensor of a checkpoint file by name.
pub fn read_named(path: &Path) -> Result<HashMap<String, Tensor>, CheckpointError> {
    read_tensors(path)
}

/// Copies the `<prefix>`-keyed tensors of an already read file into `vs`; `path` is for errors.
pub fn load_store_from(
    vs: &mut VarStore,
    file: &HashMap<String, Tensor>,
    prefix: &str,
    path: &Path,
) -> Result<(), CheckpointError> {
    copy_into(vs, file, prefix, path)
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
    if !dir.is_dir() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "directory does not exist");
        return Err(io_err(source));
    }
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
        Tensor::write_safetensors(&cpu, &tmp).map_err(|source| CheckpointError::Write {
            path: path.to_path_buf(),
            source,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{AdaFace, AdaFaceCfg, MarginHead, Uss, UssCfg};
    use crate::model::{build_backbone, Backbone, BackboneCfg};
    use tch::{nn, Device, Kind};

    struct Run {
        backbone_vs: nn::VarStore,
        head_vs: nn::VarStore,
        backbone: Box<dyn Backbone>,
    }

    /// A tiny backbone + AdaFace + USS; `steps` forward passes move BN, EMA, bank and b state.
    fn run(seed: i64, steps: usize) -> Run {
        tch::manual_seed(seed);
        let backbone_vs = nn::VarStore::new(Device::Cpu);
        let head_vs = nn::VarStore::new(Device::Cpu);
        let cfg = BackboneCfg {
            embedding_dim: 16,
            ..Default::default()
        };
        let backbone = build_backbone("tiny", &backbone_vs.root(), &cfg).unwrap();
        let mut head =
            AdaFace::new(&(head_vs.root() / "adaface"), &AdaFaceCfg::default(), 4, 16).unwrap();
        let mut uss = Uss::new(&(head_vs.root() / "uss"), &UssCfg::default(), 4, 16).unwrap();
        for _ in 0..steps {
            let x = Tensor::randn([4, 3, 112, 112], (Kind::Float, Device::Cpu));
            let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
            let emb = backbone.forward_t(&x, true).embedding;
            let _ = head.forward(&emb, &y).unwrap();
            let _ = uss.forward(&emb, &y).unwrap();
        }
        Run {
            backbone_vs,
            head_vs,
            backbone,
        }
    }

    fn assert_same(a: &nn::VarStore, b: &nn::VarStore) {
        let (va, vb) = (a.variables(), b.variables());
        assert_eq!(va.len(), vb.len());
        for (k, t) in &va {
            assert!(t.equal(&vb[k]), "{k} differs after load");
        }
    }

    #[test]
    fn stores_round_trip_exactly_with_adaface_and_uss_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt.safetensors");
        let saved = run(1, 2);
        let stats = saved.head_vs.variables()["adaface.batch_mean"].double_value(&[0]);
        assert_ne!(stats, 20.0, "the EMA moved");
        assert!(
            saved.head_vs.variables()["uss.b"].double_value(&[0]) > 0.0,
            "b was initialised"
        );
        save_stores(
            &path,
            &[("backbone", &saved.backbone_vs), ("heads", &saved.head_vs)],
        )
        .unwrap();
        let mut fresh = run(2, 0);
        load_stores(
            &path,
            &mut [
                ("backbone", &mut fresh.backbone_vs),
                ("heads", &mut fresh.head_vs),
            ],
        )
        .unwrap();
        assert_same(&saved.backbone_vs, &fresh.backbone_vs);
        assert_same(&saved.head_vs, &fresh.head_vs);
        // The loaded model computes what the saved one does.
        let x = Tensor::randn([2, 3, 112, 112], (Kind::Float, Device::Cpu));
        let a = tch::no_grad(|| saved.backbone.forward_t(&x, false).embedding);
        let b = tch::no_grad(|| fresh.backbone.forward_t(&x, false).embedding);
        assert!(a.equal(&b));
        // Trainability survives loading.
        assert!(fresh.backbone_vs.variables()["fc.weight"].requires_grad());
        assert!(!fresh.backbone_vs.variables()["features.weight"].requires_grad());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temp files left behind: {names:?}");
    }

    #[test]
    fn single_store_round_trips_and_overwrites_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backbone.safetensors");
        let a = run(3, 1);
        save_var_store(&a.backbone_vs, &path).unwrap();
        let b = run(4, 1);
        save_var_store(&b.backbone_vs, &path).unwrap();
        let mut c = run(5, 0);
        load_var_store(&mut c.backbone_vs, &path).unwrap();
        assert_same(&b.backbone_vs, &c.backbone_vs);
    }

    /// What docs/CONVERT.md's script writes: arcface_torch keys, float32, plus the
    /// `num_batches_tracked` int64 entries a PyTorch state dict carries.
    #[test]
    fn loads_a_converted_state_dict_with_extra_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("converted.safetensors");
        let src = run(6, 1);
        let mut named: Vec<(String, Tensor)> = src.backbone_vs.variables().into_iter().collect();
        let bns: Vec<String> = named
            .iter()
            .filter_map(|(k, _)| {
                k.strip_suffix(".running_mean")
                    .map(|p| format!("{p}.num_batches_tracked"))
            })
            .collect();
        named.extend(bns.into_iter().map(|k| (k, Tensor::from(7i64))));
        Tensor::write_safetensors(&named, &path).unwrap();
        let mut dst = run(7, 0);
        load_var_store(&mut dst.backbone_vs, &path).unwrap();
        assert_same(&src.backbone_vs, &dst.backbone_vs);
    }

    #[test]
    fn bad_files_give_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = run(8, 0);
        let missing = dir.path().join("nope.safetensors");
        let err = load_var_store(&mut r.backbone_vs, &missing).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Io { .. })
                && err.to_string().contains("nope.safetensors"),
            "{err}"
        );

        let good = dir.path().join("good.safetensors");
        save_var_store(&r.backbone_vs, &good).unwrap();
        let bytes = fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.safetensors");
        fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_var_store(&mut r.backbone_vs, &truncated).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Format { .. })
                && err.to_string().contains("truncated.safetensors"),
            "{err}"
        );
        let garbage = dir.path().join("garbage.safetensors");
        fs::write(&garbage, b"not a checkpoint at all").unwrap();
        assert!(matches!(
            load_var_store(&mut r.backbone_vs, &garbage),
            Err(CheckpointError::Format { .. })
        ));

        // A different model: missing keys and wrong shapes are named.
        let other = nn::VarStore::new(Device::Cpu);
        let _ = build_backbone(
            "tiny",
            &other.root(),
            &BackboneCfg {
                embedding_dim: 8,
                ..Default::default()
            },
        )
        .unwrap();
        let other_path = dir.path().join("other.safetensors");
        save_var_store(&other, &other_path).unwrap();
        let err = load_var_store(&mut r.backbone_vs, &other_path).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Shape { key, .. } if key.starts_with("fc.") || key.starts_with("features.")),
            "{err}"
        );
        let err = load_stores(&other_path, &mut [("backbone", &mut r.backbone_vs)]).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Missing { key, .. } if key.starts_with("backbone/")),
            "{err}"
        );

        let pt = dir.path().join("model.pt");
        assert!(matches!(
            save_var_store(&r.backbone_vs, &pt),
            Err(CheckpointError::Extension { .. })
        ));
        let err = save_stores(&good, &[("a", &r.backbone_vs), ("a", &r.head_vs)]).unwrap_err();
        assert!(matches!(err, CheckpointError::StoreName { .. }));
        let err = save_var_store(
            &r.backbone_vs,
            Path::new("/nonexistent-maskgate-dir/x.safetensors"),
        )
        .unwrap_err();
        assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    }
}
