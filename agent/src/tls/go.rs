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

/// Whether the ELF file at `path` has a Go section, from its section headers alone (a few KiB
/// read, not the whole binary: every new process's executable is asked).
fn has_go_section(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::open(path)?;
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)?;
    // 64-bit little-endian ELF only (the probes are amd64 anyway).
    if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return Ok(false);
    }
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&header, 0x28),
        usize::from(u16_at(&header, 0x3a)),
        usize::from(u16_at(&header, 0x3c)),
        usize::from(u16_at(&header, 0x3e)),
    );
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return Ok(false);
    }
    let mut table = vec![0u8; shentsize * shnum];
    file.read_exact_at(&mut table, shoff)?;
    let names_header = &table[shstrndx * shentsize..];
    let (names_off, names_len) = (u64_at(names_header, 0x18), u64_at(names_header, 0x20));
    if names_len > 1 << 20 {
        return Ok(false);
    }
    let mut names = vec![0u8; names_len as usize];
    file.read_exact_at(&mut names, names_off)?;
    Ok(memchr::memmem::find(&names, b".go.buildinfo").is_some()
        || memchr::memmem::find(&names, b".gopclntab").is_some())
}

/// Where to probe the executable at `path`.
pub fn targets(path: &Path) -> Result<GoTargets, GoError> {
    match has_go_section(path) {
        Ok(true) => {}
        Ok(false) => return Err(GoError::NotGo),
        Err(e) => return Err(GoError::Unreadable(e.to_string())),
    }
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
