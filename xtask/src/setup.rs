//! `cargo xtask setup`: installs what a fresh machine lacks, and nothing else.
//!
//! - Debian packages the tests and benchmarks drive (tcpdump, tshark, nginx, iperf3, ...);
//! - the nightly toolchain's `rust-src` (the eBPF crate is built with `-Z build-std=core`);
//! - bpf-linker 0.13.0 built against the nightly's own libLLVM through a persistent
//!   `LLVM_PREFIX` whose `lib/` links `libLLVM.so` and the library's SONAME, self-tested from a
//!   plain environment;
//! - a project venv (`.venv`) with the Python tools the tests use (DuckDB).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::sh::{cargo_bin_dir, is_root, note, output, root_dir, run as run_cmd, step};

/// Debian packages, each with a command that proves it is installed.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "/usr/sbin/ip"),
    ("tcpdump", "/usr/bin/tcpdump"),
    ("tshark", "/usr/bin/tshark"),
    ("curl", "/usr/bin/curl"),
    ("nginx-light", "/usr/sbin/nginx"),
    ("openssl", "/usr/bin/openssl"),
    ("iperf3", "/usr/bin/iperf3"),
    ("bpftool", "/usr/sbin/bpftool"),
    ("dnsutils", "/usr/bin/dig"),
    ("iputils-ping", "/usr/bin/ping"),
    ("netcat-openbsd", "/usr/bin/nc.openbsd"),
    ("util-linux", "/usr/bin/setpriv"),
    ("dnsmasq-base", "/usr/sbin/dnsmasq"),
    ("wrk", "/usr/bin/wrk"),
    ("nghttp2-client", "/usr/bin/h2load"),
    ("dnsperf", "/usr/bin/dnsperf"),
    // Impairments for the TCP analysis tests (drops after the capture point).
    ("nftables", "/usr/sbin/nft"),
    // A TLS client on GnuTLS: a process whose TLS Remora reports as not decrypted.
    ("wget", "/usr/bin/wget"),
    // Go's crypto/tls, for the Go TLS test peer (built from bpf-tests/tests/go_tls_client).
    ("golang-go", "/usr/bin/go"),
];

const BPF_LINKER_VERSION: &str = "0.13.0";
const DUCKDB_VERSION: &str = "2.0.0";
const GRPCIO_VERSION: &str = "1.85.1";
/// The MCP Python SDK, the real client the MCP tests drive Remora with.
const MCP_VERSION: &str = "2.3.0";
/// hypercorn serves HTTP/1.1 → h2c upgrades (nginx and nghttpd cannot) for the dissection oracle.
const HYPERCORN_VERSION: &str = "0.18.0";
/// Validates manifests/ against the Kubernetes OpenAPI schemas (strict).
const KUBERNETES_VALIDATE_VERSION: &str = "1.34.0";

/// Runs every setup step.
pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    python_venv()?;
    step(&format!(
        "setup complete ({:.1} s)",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn debian_packages() -> anyhow::Result<()> {
    step("Debian packages");
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        note(&format!("all {} present", PACKAGES.len()));
        return Ok(());
    }
    note(&format!("installing: {}", missing.join(" ")));
    if !is_root() {
        bail!(
            "installing Debian packages needs root: run `sudo -E cargo xtask setup`, or install {} yourself",
            missing.join(" ")
        );
    }
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed; check the package mirror is reachable")?;
    run_cmd(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
    .context("apt-get install failed")?;
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    step("nightly rust-src (for the eBPF build)");
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "the nightly toolchain is missing (`rustup toolchain list`); the eBPF programs need it: \
         install it with `rustup toolchain install nightly --component rust-src`",
    )?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        note("present");
        return Ok(());
    }
    note("installing");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// The nightly sysroot's libLLVM shared library (the real file, named by its SONAME).
fn nightly_libllvm() -> anyhow::Result<PathBuf> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .context("cannot find the nightly sysroot")?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let mut candidates: Vec<PathBuf> = fs::read_dir(&lib)
        .with_context(|| format!("listing {}", lib.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .collect();
    candidates.sort();
    candidates.pop().with_context(|| {
        format!(
            "no libLLVM.so.* in {}; is the nightly toolchain complete?",
            lib.display()
        )
    })
}

fn llvm_major(libllvm: &Path) -> String {
    libllvm
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .and_then(|n| n.strip_prefix("libLLVM.so.").map(str::to_owned))
        .and_then(|v| v.split('.').next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Makes `link` a symlink to `target`; returns true when it had to change.
fn ensure_symlink(target: &Path, link: &Path) -> anyhow::Result<bool> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))?;
    Ok(true)
}

/// `bpf-linker --version` from a plain environment (no rustup LD_LIBRARY_PATH).
fn bpf_linker_works(bin: &Path) -> bool {
    output(
        Command::new(bin)
            .arg("--version")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home()),
    )
    .is_some_and(|v| v.contains(BPF_LINKER_VERSION))
}

fn bpf_linker() -> anyhow::Result<()> {
    step(&format!(
        "bpf-linker {BPF_LINKER_VERSION} (against the nightly's libLLVM)"
    ));
    let libllvm = nightly_libllvm()?;
    let major = llvm_major(&libllvm);
    let prefix = home()
        .join(".local/share/remora")
        .join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path without a file name")?;
    let changed = ensure_symlink(&libllvm, &lib.join("libLLVM.so"))?
        | ensure_symlink(&libllvm, &lib.join(soname))?;
    let bin = cargo_bin_dir().join("bpf-linker");
    if !changed && bpf_linker_works(&bin) {
        note(&format!(
            "present, self-test passed (LLVM_PREFIX {})",
            prefix.display()
        ));
        return Ok(());
    }
    note(&format!(
        "building with LLVM_PREFIX={} (LLVM {major}; about two minutes)",
        prefix.display()
    ));
    run_cmd(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed")?;
    if !bpf_linker_works(&bin) {
        bail!(
            "{} --version fails from a plain shell; check that {} links to the nightly's libLLVM",
            bin.display(),
            lib.display()
        );
    }
    note("installed, self-test passed");
    Ok(())
}

fn python_venv() -> anyhow::Result<()> {
    step("Python test tools (.venv: duckdb, grpcio, mcp, hypercorn, kubernetes-validate)");
    let venv = root_dir().join(".venv");
    let python = venv.join("bin/python");
    let have = |module: &str| {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if python.exists()
        && have("duckdb")
        && have("grpc")
        && have("mcp")
        && have("hypercorn")
        && have("kubernetes_validate")
    {
        note("present");
        return Ok(());
    }
    if !python.exists() {
        note("creating .venv");
        run_cmd(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv failed; install python3-venv")?;
    }
    note(&format!(
        "installing duckdb=={DUCKDB_VERSION} grpcio=={GRPCIO_VERSION} mcp=={MCP_VERSION} \
         hypercorn=={HYPERCORN_VERSION} kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"
    ));
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        &format!("duckdb=={DUCKDB_VERSION}"),
        &format!("grpcio=={GRPCIO_VERSION}"),
        &format!("mcp=={MCP_VERSION}"),
        &format!("hypercorn=={HYPERCORN_VERSION}"),
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
    ]))
    .context("pip install failed; check that PyPI is reachable")
}
