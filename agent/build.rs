//! Builds the eBPF object (`remora-agent-ebpf`, bin `remora-tc`) for `bpfel-unknown-none` with
//! aya-build and leaves it in `OUT_DIR` for `include_bytes_aligned!`.
//!
//! Needs the nightly toolchain with `rust-src` and `bpf-linker` on PATH: `cargo xtask setup`
//! installs both.
//!
//! Cargo runs this script once per distinct feature set of the agent's build dependencies
//! (clippy, `cargo build -p …` and `cargo test --workspace` each resolve their own), and
//! aya-build compiles `core` from source into a fresh `OUT_DIR` every time: about a minute on
//! two cores. The object only depends on the eBPF sources, the lock file and the tools, so it
//! is cached in the target directory under a hash of exactly those.
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The eBPF binaries aya-build leaves in `OUT_DIR`.
const OBJECTS: &[&str] = &["remora-tc"];

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR unset")?;
    let workspace = Path::new(&manifest_dir)
        .parent()
        .context("agent crate has no parent directory")?;
    let ebpf_dir = workspace.join("agent-ebpf");
    let common_dir = workspace.join("agent-common");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR unset")?);
    for input in [&ebpf_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", input.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            input.join("Cargo.toml").display()
        );
    }

    let cache =
        cache_dir(&out_dir).map(|dir| dir.join(inputs_hash(workspace, &ebpf_dir, &common_dir)));
    if let Some(cache) = &cache
        && OBJECTS.iter().all(|name| cache.join(name).is_file())
    {
        for name in OBJECTS {
            std::fs::copy(cache.join(name), out_dir.join(name))
                .with_context(|| format!("copying cached eBPF object {name}"))?;
        }
        return Ok(());
    }

    let root_dir = ebpf_dir.to_str().context("non-UTF-8 path to agent-ebpf")?;
    let package = aya_build::Package {
        name: "remora-agent-ebpf",
        root_dir,
        no_default_features: false,
        features: &[],
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; run `cargo xtask setup` to install the nightly \
         rust-src component and bpf-linker",
    )?;
    if let Some(cache) = &cache {
        // A failure to fill the cache only costs the next build a minute.
        if let Err(error) = store(&out_dir, cache) {
            println!("cargo:warning=could not cache the eBPF object: {error:#}");
        }
    }
    Ok(())
}

/// `<target>/ebpf-cache`, from `OUT_DIR` = `<target>/<profile>/build/<unit>/out`; `None` for
/// any other layout (then nothing is cached).
fn cache_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.ancestors().nth(2)?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(out_dir.ancestors().nth(4)?.join("ebpf-cache"))
}

/// Hash of everything the object is built from: both crates' files, the workspace manifest and
/// lock file, and the versions of the nightly compiler and bpf-linker.
fn inputs_hash(workspace: &Path, ebpf_dir: &Path, common_dir: &Path) -> String {
    let mut hasher = DefaultHasher::new();
    let mut files = Vec::new();
    for dir in [ebpf_dir, common_dir] {
        collect_files(dir, &mut files);
    }
    files.push(workspace.join("Cargo.toml"));
    files.push(workspace.join("Cargo.lock"));
    files.sort();
    for file in &files {
        hasher.write(file.to_string_lossy().as_bytes());
        hasher.write(&std::fs::read(file).unwrap_or_default());
    }
    for (tool, args) in [
        ("rustup", &["run", "nightly", "rustc", "-vV"][..]),
        ("bpf-linker", &["--version"][..]),
    ] {
        let output = Command::new(tool).args(args).output();
        hasher.write(&output.map(|o| o.stdout).unwrap_or_default());
    }
    format!("{:016x}", hasher.finish())
}

/// Every file under `dir`, skipping build output.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if entry.file_name() != "target" {
                collect_files(&path, files);
            }
        } else {
            files.push(path);
        }
    }
}

/// Copies the freshly built objects into the cache: into a temporary directory first, renamed
/// into place, so a concurrent or interrupted build never sees half an entry.
fn store(out_dir: &Path, cache: &Path) -> anyhow::Result<()> {
    let parent = cache.parent().context("cache entry has no parent")?;
    std::fs::create_dir_all(parent)?;
    let temp = parent.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir(&temp)?;
    for name in OBJECTS {
        std::fs::copy(out_dir.join(name), temp.join(name))?;
    }
    if let Err(error) = std::fs::rename(&temp, cache) {
        let _ = std::fs::remove_dir_all(&temp);
        // A concurrent build may have stored the same entry first; anything else is an error.
        if !cache.is_dir() {
            return Err(error.into());
        }
    }
    Ok(())
}
