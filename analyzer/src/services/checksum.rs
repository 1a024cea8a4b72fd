//! File checksums for what Remora publishes (dissection tables, snapshot slices), so that a
//! torn, truncated or altered file is found rather than read.

use std::{fs, path::Path};

/// `crc32:<hex>:<bytes>` of a file (CRC32 runs at several GB/s: hashing a snapshot's slices
/// costs far less than the disk reading them).
pub fn checksum(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok(format!("crc32:{:08x}:{bytes}", hasher.finalize()))
}

/// Checks `(file, expected)` pairs under `dir`: `Err` names the first that is missing or differs.
pub fn verify<'a>(
    dir: &Path,
    expected: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), String> {
    for (file, want) in expected {
        let got = checksum(&dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
        if got != want {
            return Err(format!("{file}: {got}, expected {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_changed_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let sum = super::checksum(&path).unwrap();
        assert_eq!(sum, "crc32:3610a686:5");
        assert!(super::verify(dir.path(), [("f", sum.as_str())]).is_ok());
        std::fs::write(&path, b"hellp").unwrap();
        let err = super::verify(dir.path(), [("f", sum.as_str())]).unwrap_err();
        assert!(err.starts_with("f: crc32:"), "{err}");
        assert!(super::verify(dir.path(), [("gone", sum.as_str())]).is_err());
    }
}
