//! Builds the eBPF object (`agent-ebpf`, bin `remora-tc`) for `bpfel-unknown-none` with
//! aya-build and leaves it in `OUT_DIR` for `include_bytes_aligned!`.
//!
//! Needs the nightly toolchain with `rust-src` and `bpf-linker` on PATH: `cargo xtask setup`
//! installs both.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir)
        .parent()
        .context("agent crate has no parent directory")?
        .join("agent-ebpf");
    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!("cargo:rerun-if-changed=../agent-common/src");
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir,
        no_default_features: false,
        features: &[],
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; run `cargo xtask setup` to install the nightly \
         rust-src component and bpf-linker",
    )
}
