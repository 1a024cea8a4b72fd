//! docs/kfl.md, generated from the catalog (`cargo xtask docs` writes it; a test keeps the
//! checked-in copy current).

use std::fmt::Write as _;

use crate::catalog::{self, ALIASES, Table};

const INTRO: &str = include_str!("docs_intro.md");

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The whole of docs/kfl.md.
pub fn markdown() -> String {
    let mut out = String::from(INTRO);
    for table in [Table::Calls, Table::Conns] {
        let _ = write!(
            out,
            "\n## Fields of `{}`\n\n| field | type | protocols | description | example |\n|---|---|---|---|---|\n",
            table.name()
        );
        for f in catalog::fields(table) {
            let source = match f.column() {
                Some(c) if c != f.name => format!(" (column `{c}`)"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {}{} | `{}` |",
                f.name,
                f.ty.name(),
                f.protocols,
                cell(f.description),
                source,
                cell(f.example)
            );
        }
    }
    out.push_str("\n## Aliases (legacy syntax and Kubeshark's examples)\n\n| alias | stands for |\n|---|---|\n");
    for a in ALIASES {
        let _ = writeln!(out, "| `{}` | `{}` |", a.name, a.target);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_docs_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kfl.md");
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == super::markdown(),
            "docs/kfl.md is out of date with the KFL catalog: run `cargo xtask docs` and commit it"
        );
    }
}
