//! Puts `memory.x` on the linker path for cortex-m-rt.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()));
    if let Err(e) = std::fs::copy("memory.x", out.join("memory.x")) {
        panic!("memory.x: {e}");
    }
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
}
