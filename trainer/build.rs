//! Embed libtorch's directory as an rpath so `trainer` runs without LD_LIBRARY_PATH.
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        // Where `--device cuda` finds libtorch_cuda.so to dlopen (train::device).
        println!("cargo:rustc-env=MASKGATE_LIBTORCH_LIB={lib}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
