//! Writes docs/kfl.md from the field catalog (`cargo xtask docs` runs this).

use std::io::Write as _;

fn main() -> std::io::Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/kfl.md".to_owned());
    let tmp = format!("{path}.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(remora_kfl::docs::markdown().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    println!("wrote {path}");
    Ok(())
}
