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

/// What a `--device` name asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Cpu,
    Cuda(usize),
}

/// Parses `cpu`, `cuda` (= `cuda:0`), `cuda:N`.
fn parse_device(name: &str) -> Result<Request, DeviceError> {
    match name {
        "cpu" => Ok(Request::Cpu),
        "cuda" => Ok(Request::Cuda(0)),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Request::Cuda)
            .ok_or_else(|| DeviceError::Unknown(name.to_string())),
    }
}

/// The CUDA device `index` (asked for as `name`), given what libtorch reports once its CUDA
/// library is loaded: whether CUDA is `available` and how many devices it sees. Kept free of
/// libtorch so that both the GPU and the no-GPU answers are tested on every machine.
fn cuda_device(
    name: &str,
    index: usize,
    available: bool,
    count: usize,
) -> Result<Device, DeviceError> {
    if !available || count == 0 {
        return Err(DeviceError::NoGpu(count));
    }
    if index >= count {
        return Err(DeviceError::Index(name.to_string(), count));
    }
    Ok(Device::Cuda(index))
}

/// Parses `cpu`, `cuda`, `cuda:N`; loads CUDA on demand. `threads` sets libtorch's intra-op
/// threads on the CPU (1 is fastest on a busy small machine).
pub fn select_device(name: &str, threads: i32) -> Result<Device, DeviceError> {
    let index = match parse_device(name)? {
        Request::Cpu => {
            if threads > 0 {
                tch::set_num_threads(threads);
            }
            return Ok(Device::Cpu);
        }
        Request::Cuda(index) => index,
    };
    load_cuda()?;
    let count = tch::Cuda::device_count().max(0) as usize;
    let device = cuda_device(name, index, tch::Cuda::is_available(), count)?;
    tch::Cuda::cudnn_set_benchmark(true);
    Ok(device)
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
    fn device_names_parse() {
        assert_eq!(parse_device("cpu").unwrap(), Request::Cpu);
        assert_eq!(parse_device("cuda").unwrap(), Request::Cuda(0));
        assert_eq!(parse_device("cuda:3").unwrap(), Request::Cuda(3));
        for bad in ["", "CPU", "cuda:", "cuda:-1", "cuda0", "gpu"] {
            assert!(
                matches!(parse_device(bad), Err(DeviceError::Unknown(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn no_gpu_is_a_clear_error() {
        // CUDA unavailable (CPU-only driver stack), or available with no device visible.
        for (available, count) in [(false, 0), (false, 2), (true, 0)] {
            let err = cuda_device("cuda", 0, available, count).unwrap_err();
            assert!(
                matches!(err, DeviceError::NoGpu(n) if n == count),
                "{available} {count}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains("--device cuda") && text.contains("no usable GPU"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_gpu_is_selected_by_index_and_a_missing_index_is_an_error() {
        assert_eq!(cuda_device("cuda", 0, true, 2).unwrap(), Device::Cuda(0));
        assert_eq!(cuda_device("cuda:1", 1, true, 2).unwrap(), Device::Cuda(1));
        let err = cuda_device("cuda:2", 2, true, 2).unwrap_err();
        assert!(
            matches!(&err, DeviceError::Index(n, 2) if n == "cuda:2"),
            "{err:?}"
        );
        assert!(err.to_string().contains("only 2 CUDA devices"), "{err}");
    }

    /// On this machine, whatever it has: `select_device` answers what libtorch reports.
    #[test]
    fn cuda_selection_agrees_with_libtorch() {
        let got = select_device("cuda", 1);
        // `select_device` has loaded libtorch's CUDA library if it could; ask libtorch directly.
        let available = tch::Cuda::is_available();
        let count = tch::Cuda::device_count().max(0) as usize;
        eprintln!("select_device(\"cuda\") here: {got:?} (available {available}, {count} devices)");
        match &got {
            Ok(d) => assert!(available && count > 0 && *d == Device::Cuda(0), "{d:?}"),
            Err(DeviceError::Load { .. }) => assert!(!available, "CUDA works but did not load"),
            Err(DeviceError::NoGpu(n)) => {
                assert_eq!(*n, count);
                assert!(!available || count == 0, "{count} GPUs but NoGpu");
            }
            Err(e) => panic!("unexpected error for `cuda`: {e:?}"),
        }
        if let Err(e) = &got {
            assert!(e.to_string().contains("--device cuda"), "{e}");
        }
        // One past the last visible device is never usable.
        assert!(select_device(&format!("cuda:{count}"), 1).is_err());
    }
}
