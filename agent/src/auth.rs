//! Bearer-token protection of the node API.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use subtle::ConstantTimeEq as _;

use crate::error::{AgentError, Result};

/// Reads the token in `path`, or creates one (32 random bytes, hex, file mode 0600). A token
/// file that others can read or write is refused: whoever read it could use the API.
pub fn load_or_create_token(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let mode = fs::metadata(path)
                .map(|m| m.permissions().mode())
                .map_err(|e| AgentError::io(format!("reading token {}", path.display()), e))?;
            if mode & 0o077 != 0 {
                return Err(AgentError::Config(format!(
                    "the token file {} is open to other users (mode {:o}); run `chmod 600 {}` \
                     and start again (and make a new token if others may have read it)",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
            return Ok(text.trim().to_owned());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AgentError::io(
                format!("reading token {}", path.display()),
                e,
            ));
        }
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| AgentError::io(format!("creating {}", parent.display()), e))?;
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| AgentError::io(format!("writing token {}", path.display()), e))?;
    Ok(token)
}

/// True when an `Authorization` header value carries `token` (constant-time comparison).
pub fn authorized(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("token");
        let token = load_or_create_token(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_token(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_or_create_token(&path).unwrap(), token);
    }

    #[test]
    fn creates_once_with_private_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/token");
        let a = load_or_create_token(&path).unwrap();
        assert_eq!(a.len(), 64);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create_token(&path).unwrap(), a);
        assert!(authorized(Some(&format!("Bearer {a}")), &a));
        assert!(!authorized(Some("Bearer nope"), &a));
        assert!(!authorized(Some(&a), &a));
        assert!(!authorized(None, &a));
    }
}
