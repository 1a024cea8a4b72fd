//! `remora snapshot|dissection|calls|stats`: the API from a shell, for people. Each command is
//! one request to a running analyzer (`--url`, token from `--token-file`), printed as a table or,
//! with `--json`, as the API's JSON.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the analyzer is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Analyzer URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8898",
        env = "REMORA_URL",
        global = true
    )]
    pub url: String,
    /// File holding the bearer token.
    #[arg(
        long,
        default_value = "./remora-data/token",
        env = "REMORA_TOKEN_FILE",
        global = true
    )]
    pub token_file: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Connection {
    fn token(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.token_file)
            .map(|t| t.trim().to_owned())
            .with_context(|| {
                format!(
                    "reading the token from {} (remora up prints where it is; pass --token-file)",
                    self.token_file.display()
                )
            })
    }

    /// Sends a request and returns the JSON body; API errors become their message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let auth = format!("Bearer {}", self.token()?);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let response = match (method, body) {
            ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
            ("POST", None) => agent.post(&url).header("Authorization", &auth).send_empty(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call(),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        }
        .with_context(|| {
            format!(
                "cannot reach the analyzer at {} (is `remora up` running?)",
                self.url
            )
        })?;
        let status = response.status().as_u16();
        let value: Value = response
            .into_body()
            .read_json()
            .with_context(|| format!("{url} did not answer JSON"))?;
        if status >= 400 {
            let e = &value["error"];
            let mut msg = format!(
                "{} ({status}): {}",
                e["kind"].as_str().unwrap_or("error"),
                e["message"].as_str().unwrap_or("")
            );
            if let Some(x) = e["excerpt"].as_str() {
                msg.push('\n');
                msg.push_str(x);
            }
            bail!(msg);
        }
        Ok(value)
    }
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints rows as an aligned text table with the given columns.
pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| cell(&r[*c]).chars().take(60).collect())
                .collect()
        })
        .collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |items: Vec<String>| -> String {
        items
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(columns.iter().map(|c| (*c).to_owned()).collect());
    for row in cells {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let rows = vec![
            serde_json::json!({"a": "x", "b": 10}),
            serde_json::json!({"a": "long", "b": null}),
        ];
        assert_eq!(table(&rows, &["a", "b"]), "a     b\nx     10\nlong");
        assert_eq!(encode("a b/\"c\""), "a%20b%2F%22c%22");
    }
}
