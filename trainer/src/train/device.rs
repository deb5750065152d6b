//! Device selection. The CPU binary never loads CUDA: `--device cuda` dlopens
//! `libtorch_cuda.so` from the libtorch directory baked in at build time (or next to the loaded
//! libtorch_cpu via `MASKGATE_LIBTORCH_LIB` at run time), then asks libtorch for a GPU.

use tch::Device;

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}; use cpu, cuda or cuda:N")]
    Unknown(String),
    #[error("--device cuda: cannot load {path}: {message} (is this a CUDA build of libtorch?)")]
    Load { path: String, message: String },
    #[error(
        "--device cuda: libtorch's CUDA library loaded but no usable GPU was found ({0} devices)"
    )]
    NoGpu(usize),
    #[error("--device {0}: only {1} CUDA devices are visible")]
    Index(String, usize),
}

/// Parses `cpu`, `cuda`, `cuda:N`; loads CUDA on demand. `threads` sets libtorch's intra-op
/// threads on the CPU (1 is fastest on a busy small machine).
pub fn select_device(name: &str, threads: i32) -> Result<Device, DeviceError> {
    if name == "cpu" {
        if threads > 0 {
            tch::set_num_threads(threads);
        }
        return Ok(Device::Cpu);
    }
    let index = match name {
        "cuda" => 0usize,
        _ => name
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .ok_or_else(|| DeviceError::Unknown(name.to_string()))?,
    };
    load_cuda()?;
    let count = tch::Cuda::device_count().max(0) as usize;
    if !tch::Cuda::is_available() || count == 0 {
        return Err(DeviceError::NoGpu(count));
    }
    if index >= count {
        return Err(DeviceError::Index(name.to_string(), count));
    }
    tch::Cuda::cudnn_set_benchmark(true);
    Ok(Device::Cuda(index))
}

/// The libtorch lib directory: run-time override first, then the build-time one.
fn libtorch_lib_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("MASKGATE_LIBTORCH_LIB")
        .map(Into::into)
        .or_else(|| option_env!("MASKGATE_LIBTORCH_LIB").map(Into::into))
}

fn load_cuda() -> Result<(), DeviceError> {
    let path = libtorch_lib_dir()
        .map(|d| d.join("libtorch_cuda.so"))
        .unwrap_or_else(|| "libtorch_cuda.so".into());
    let display = path.display().to_string();
    let c_path = std::ffi::CString::new(display.clone()).map_err(|_| DeviceError::Load {
        path: display.clone(),
        message: "path contains a NUL byte".into(),
    })?;
    // SAFETY: dlopen with a valid NUL-terminated path; the handle is intentionally kept open for
    // the life of the process (libtorch registers its CUDA backend on load).
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        let message = if err.is_null() {
            "unknown dlopen error".to_string()
        } else {
            // SAFETY: non-null dlerror result is a valid C string.
            unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(DeviceError::Load {
            path: display,
            message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_device_names_are_errors() {
        assert!(matches!(
            select_device("tpu", 1),
            Err(DeviceError::Unknown(_))
        ));
        assert!(matches!(
            select_device("cuda:x", 1),
            Err(DeviceError::Unknown(_))
        ));
    }

    #[test]
    fn cuda_without_a_gpu_fails_with_a_clear_message() {
        if tch::Cuda::is_available() {
            return; // a GPU machine: nothing to check here
        }
        let err = select_device("cuda", 1).unwrap_err().to_string();
        assert!(err.contains("--device cuda"), "{err}");
    }
}
