//! Go binaries: where to put the crypto/tls probes (`agent-ebpf/src/gotls.rs`).
//!
//! Go links crypto/tls into each executable, so every Go binary is a file to hook. From its ELF
//! file: the Go version (`.go.buildinfo`; 1.17+ is needed for the register ABI the probes read),
//! the symbols `crypto/tls.(*Conn).Write` and `(*Conn).Read` (a stripped binary has none), and,
//! by decoding their machine code, the offset of every `RET`: a uretprobe would corrupt the
//! goroutine stack, so returns are probed where they happen.

use std::path::Path;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// The functions probed.
pub const WRITE: &str = "crypto/tls.(*Conn).Write";
/// See [`WRITE`].
pub const READ: &str = "crypto/tls.(*Conn).Read";

/// Where to probe one Go binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTargets {
    /// `go1.19.8`, ...
    pub version: String,
    /// Offsets of the `RET`s in [`WRITE`].
    pub write_returns: Vec<u64>,
    /// Offsets of the `RET`s in [`READ`].
    pub read_returns: Vec<u64>,
}

/// Why a Go binary cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoError {
    /// Not a Go binary.
    #[error("not a Go binary")]
    NotGo,
    /// Not readable or not ELF.
    #[error("{0}")]
    Unreadable(String),
    /// Older than the register ABI.
    #[error("Go {0}: only Go 1.17 and later (register ABI, amd64) are supported")]
    TooOld(String),
    /// No symbol table, or no crypto/tls.
    #[error("no symbol {0}: a stripped binary (-ldflags=-s), or one without crypto/tls")]
    NoSymbol(&'static str),
    /// The machine code could not be decoded.
    #[error("{0}: no RET found in its code")]
    NoReturn(&'static str),
}

/// The Go version an executable was built with, from `.go.buildinfo` (Go 1.18+ keeps it
/// inline; older builds point to it, and are reported as unknown).
fn version(file: &object::File<'_>) -> Option<String> {
    let data = file.section_by_name(".go.buildinfo")?.data().ok()?;
    if data.get(..14)? != b"\xff Go buildinf:" {
        return None;
    }
    let flags = *data.get(15)?;
    if flags & 2 == 0 {
        return None;
    }
    let (len, used) = uvarint(data.get(32..)?)?;
    let start = 32 + used;
    let text = data.get(start..start + usize::try_from(len).ok()?)?;
    String::from_utf8(text.to_vec()).ok()
}

fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// True for `go1.17` and later (`go1.17`, `go1.21.3`, `devel go1.23-...`).
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.split("go1.").nth(1) else {
        return false;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|m| m >= 17)
}

/// Offsets of the `RET` instructions of `name`'s code.
fn returns(file: &object::File<'_>, name: &'static str) -> Result<Vec<u64>, GoError> {
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(name))
        .ok_or(GoError::NoSymbol(name))?;
    let section = symbol
        .section_index()
        .and_then(|i| file.section_by_index(i).ok())
        .ok_or(GoError::NoSymbol(name))?;
    let code = section
        .data_range(symbol.address(), symbol.size())
        .ok()
        .flatten()
        .ok_or(GoError::NoSymbol(name))?;
    let mut decoder = iced_x86::Decoder::with_ip(64, code, 0, iced_x86::DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut instruction = iced_x86::Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.mnemonic() == iced_x86::Mnemonic::Ret {
            out.push(instruction.ip());
        }
    }
    if out.is_empty() {
        return Err(GoError::NoReturn(name));
    }
    Ok(out)
}

/// Where to probe the executable at `path`.
pub fn targets(path: &Path) -> Result<GoTargets, GoError> {
    let bytes = std::fs::read(path).map_err(|e| GoError::Unreadable(e.to_string()))?;
    let file = object::File::parse(&*bytes).map_err(|e| GoError::Unreadable(e.to_string()))?;
    if file.section_by_name(".go.buildinfo").is_none()
        && file.section_by_name(".gopclntab").is_none()
    {
        return Err(GoError::NotGo);
    }
    let version = version(&file).unwrap_or_else(|| "unknown".into());
    if !register_abi(&version) || file.architecture() != object::Architecture::X86_64 {
        return Err(GoError::TooOld(version));
    }
    Ok(GoTargets {
        write_returns: returns(&file, WRITE)?,
        read_returns: returns(&file, READ)?,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_with_the_register_abi() {
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.17"));
        assert!(register_abi("devel go1.23-abc"));
        assert!(!register_abi("go1.16.15"));
        assert!(!register_abi("unknown"));
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
    }

    #[test]
    fn a_non_go_binary_is_said_to_be_one() {
        assert_eq!(targets(Path::new("/proc/self/exe")), Err(GoError::NotGo));
        assert!(matches!(
            targets(Path::new("/nonexistent")),
            Err(GoError::Unreadable(_))
        ));
    }
}
