//! Running commands with progress lines and useful errors.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root.
pub fn root_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Prints a progress line.
pub fn step(what: &str) {
    println!("==> {what}");
}

/// Prints a detail line under a step.
pub fn note(what: &str) {
    println!("    {what}");
}

/// `$CARGO_HOME/bin` (where `cargo install` put bpf-linker).
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/root"), PathBuf::from)
                .join(".cargo")
        })
        .join("bin")
}

/// A cargo command whose PATH starts with `$CARGO_HOME/bin`, so the eBPF build finds the
/// bpf-linker that setup installed even when the caller's PATH lacks it.
pub fn cargo_command() -> Command {
    tool_command(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// A command run in the workspace root with `$CARGO_HOME/bin` first on PATH (use `cargo` here
/// for the rustup proxy, which understands `+nightly`).
pub fn tool_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    let mut paths = vec![cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&path));
    }
    if let Ok(joined) = std::env::join_paths(paths) {
        cmd.env("PATH", joined);
    }
    cmd.current_dir(root_dir());
    cmd
}

/// Runs `cargo args...` in the workspace root, inheriting output.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = cargo_command()
        .args(args)
        .current_dir(root_dir())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Counts of a test run, summed over every test binary.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests ignored.
    pub ignored: u64,
}

/// Runs `cargo test ...`, echoing its output, and adds the `test result:` lines to `tally`.
pub fn cargo_test(args: &[&str], tally: &mut Tally) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader, Write as _};
    let mut child = cargo_command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let stdout = child.stdout.take().context("no stdout from cargo test")?;
    let mut out = std::io::stdout();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        let _ = writeln!(out, "{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let number = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            tally.passed += number("passed");
            tally.failed += number("failed");
            tally.ignored += number("ignored");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a command, inheriting output; fails with its name and status.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

/// Runs a command and returns its stdout if it succeeded.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when running as root.
pub fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|s| s.trim() == "0")
}

/// Fails with advice when not root.
pub fn require_root(why: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("{why}: run it as root, e.g. `sudo -E cargo xtask ...`");
    }
    Ok(())
}
