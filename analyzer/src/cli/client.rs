//! The one HTTP client of a running analyzer: the shell subcommands (`remora snapshot|dissection
//! |calls|stats`) and `remora mcp --url` both send their requests through [`Client`].

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

/// Where the analyzer is and how to authenticate (the shell subcommands' flags).
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
    /// A client for the analyzer, with the token read from `--token-file`.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = read_token(&self.token_file)?;
        Ok(Client::new(&self.url, &token))
    }

    /// Sends a request and returns the JSON body; API errors become their message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        self.client()?.call(method, path, body)
    }
}

/// Reads a bearer token file (surrounding whitespace removed).
pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .with_context(|| {
            format!(
                "reading the token from {} (remora up prints where it is; pass --token-file)",
                path.display()
            )
        })
}

/// A request that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the URL.
    #[error("cannot reach the analyzer at {url}: {message}; is `remora up` running?")]
    Unreachable {
        /// The analyzer's base URL.
        url: String,
        /// The transport's error.
        message: String,
    },
    /// The answer was not JSON.
    #[error("{url} answered {status} without JSON")]
    NotJson {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
}

/// A running analyzer, reached over HTTP with its bearer token.
#[derive(Clone)]
pub struct Client {
    url: String,
    authorization: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).finish()
    }
}

impl Client {
    /// A client of the analyzer at `url` (e.g. `http://127.0.0.1:8898`).
    pub fn new(url: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            authorization: format!("Bearer {token}"),
            agent,
        }
    }

    /// Sends one request (`GET`, `POST` or `DELETE`) to `path` and returns the status and the
    /// JSON body, whatever the status.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{path}", self.url);
        let auth = self.authorization.as_str();
        let response = match (method, body) {
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_json(b),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", auth)
                .send_empty(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", auth).call(),
            _ => self.agent.get(&url).header("Authorization", auth).call(),
        }
        .map_err(|e| ClientError::Unreachable {
            url: self.url.clone(),
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let value = response
            .into_body()
            .read_json()
            .map_err(|_| ClientError::NotJson { url, status })?;
        Ok((status, value))
    }

    /// Like [`send`](Self::send), with an error status turned into an error carrying the API's
    /// message (and the KFL excerpt, when there is one).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (status, value) = self.send(method, path, body)?;
        if status >= 400 {
            return Err(api_error(status, &value));
        }
        Ok(value)
    }
}

impl Client {
    /// GETs `path` and copies the body into `out` (a binary answer, streamed); returns the
    /// bytes copied. An error status becomes an error with the API's message.
    pub fn download(&self, path: &str, out: &mut impl std::io::Write) -> anyhow::Result<u64> {
        let url = format!("{}{path}", self.url);
        let response = self
            .agent
            .get(&url)
            .header("Authorization", self.authorization.as_str())
            .call()
            .map_err(|e| ClientError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status >= 400 {
            let value = body.read_json().unwrap_or(Value::Null);
            return Err(api_error(status, &value));
        }
        let copied = std::io::copy(&mut body.as_reader(), out)
            .with_context(|| format!("reading {url} (the export stopped)"))?;
        Ok(copied)
    }
}

impl Client {
    /// POSTs `body` to `path` and copies the answer into `out` (CSV or Arrow from `/sql`);
    /// returns the bytes copied. An error status becomes an error with the API's message.
    pub fn post_download(
        &self,
        path: &str,
        body: &Value,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<u64> {
        let url = format!("{}{path}", self.url);
        let response = self
            .agent
            .post(&url)
            .header("Authorization", self.authorization.as_str())
            .send_json(body)
            .map_err(|e| ClientError::Unreachable {
                url: self.url.clone(),
                message: e.to_string(),
            })?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status >= 400 {
            let value = body.read_json().unwrap_or(Value::Null);
            return Err(api_error(status, &value));
        }
        let copied = std::io::copy(&mut body.as_reader(), out)
            .with_context(|| format!("reading the answer of {url}"))?;
        Ok(copied)
    }
}

/// An API error answer as an error carrying its kind, message and KFL excerpt.
pub fn api_error(status: u16, value: &Value) -> anyhow::Error {
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
    anyhow::Error::msg(msg)
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

/// Prints `v` as pretty JSON with `--json`, else as `text` makes it.
pub fn print(conn: &Connection, v: &Value, text: impl FnOnce(&Value) -> String) {
    if conn.json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    } else {
        println!("{}", text(v));
    }
}

/// The array under `key`, or none.
pub fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
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
