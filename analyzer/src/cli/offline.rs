//! `remora calls|stats --db DIR`: a directory that `remora dissect` wrote, queried without a
//! server.
//!
//! An analyzer is opened in this process over a temporary data directory in which `DIR`
//! appears as the completed dissection `local/db`: links to its tables, nothing copied, nothing
//! written into `DIR`. Requests go to that analyzer's routes in-process, so an offline answer
//! is exactly the API's (same KFL, paging, statistics and errors).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use axum::Router;
use serde_json::Value;

use super::client::{Client, Connection, api_error};
use crate::{
    api,
    services::{jobs::write_completed_status, workloads::NoWorkloads},
};

/// The db name a directory gets in the temporary analyzer.
const DB: &str = "local/db";
const TOKEN: &str = "offline";

/// An analyzer over one dissection directory, removed when dropped.
pub struct Offline {
    data: PathBuf,
    routes: Router,
}

impl Offline {
    /// Opens `dir` (it must hold `calls.parquet`).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("opening {}", dir.display()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let data =
            std::env::temp_dir().join(format!("remora-offline-{}-{nanos}", std::process::id()));
        // Made first, so that the directory is removed if opening fails below.
        let mut offline = Self {
            data: data.clone(),
            routes: Router::new(),
        };
        let db = data.join("dissections").join(DB);
        std::fs::create_dir_all(&db).with_context(|| format!("creating {}", db.display()))?;
        for table in ["calls.parquet", "conns.parquet"] {
            if dir.join(table).is_file() {
                std::os::unix::fs::symlink(dir.join(table), db.join(table))
                    .with_context(|| format!("linking {} into {}", table, db.display()))?;
            }
        }
        let (snapshot, name) = DB.split_once('/').unwrap_or(("local", "db"));
        write_completed_status(&db, snapshot, name)
            .with_context(|| format!("writing {}", db.display()))?;
        let state = api::AnalyzerState::open(&data, TOKEN.into(), Arc::new(NoWorkloads), 1)?;
        offline.routes = api::router(state);
        Ok(offline)
    }

    /// Sends one request to the analyzer's routes; API errors become their message. Call it
    /// from a blocking thread of the runtime.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("offline queries need the tokio runtime")?;
        let (status, value) = runtime.block_on(api::call_in_process(
            &self.routes,
            TOKEN,
            method,
            path,
            body,
        ));
        if status >= 400 {
            return Err(api_error(status, &value));
        }
        Ok(value)
    }
}

impl Offline {
    /// [`call`](Self::call), with the answer's bytes copied into `out`.
    pub fn download(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<u64> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("offline queries need the tokio runtime")?;
        let (status, bytes) = runtime.block_on(api::call_in_process_raw(
            &self.routes,
            TOKEN,
            method,
            path,
            body,
        ));
        if status >= 400 {
            let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(api_error(status, &value));
        }
        out.write_all(&bytes).context("writing the answer")?;
        Ok(bytes.len() as u64)
    }
}

impl Drop for Offline {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Where a shell subcommand about one db sends its requests.
pub enum Target {
    /// A running analyzer.
    Remote(Client),
    /// A directory opened here.
    Local(Offline),
}

impl Target {
    /// For `--db`: a directory holding `calls.parquet` (what `remora dissect --out` writes) is
    /// opened here; anything else is `<snapshot>/<dissection>` on the analyzer at `conn`.
    /// Returns the target and the db name to send.
    pub fn for_db(conn: &Connection, db: &str) -> anyhow::Result<(Self, String)> {
        if Path::new(db).join("calls.parquet").is_file() {
            return Ok((Self::Local(Offline::open(Path::new(db))?), DB.to_owned()));
        }
        Ok((Self::Remote(conn.client()?), db.to_owned()))
    }

    /// Sends one request; API errors become their message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        match self {
            Self::Remote(c) => c.call(method, path, body),
            Self::Local(o) => o.call(method, path, body),
        }
    }
    /// POSTs `body` to `path` and copies the (binary) answer into `out`.
    pub fn post_download(
        &self,
        path: &str,
        body: &Value,
        out: &mut impl std::io::Write,
    ) -> anyhow::Result<u64> {
        match self {
            Self::Remote(c) => c.post_download(path, body, out),
            Self::Local(o) => o.download("POST", path, Some(body), out),
        }
    }
}
