//! Other nodes' recordings, pulled over their node API: the agents the analyzer knows
//! (`--agents URL,...`, or discovered in the cluster from the DaemonSet's pods), their
//! boundaries, and the slices of a snapshot's window.
//!
//! Each node is pulled in its own thread. A slice is downloaded to `<data>/remote/<node>/
//! <kind>/.<file>.part`, synced, checked (size, readable Parquet) and renamed; a slice already
//! there with its size is not downloaded again, so making a snapshot again after a node failed
//! fetches only what is missing. Slices are hard-linked from there into the snapshot, and the
//! mirror's copies of a complete node are removed once linked.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::RwLock,
    time::Duration,
};

use serde::Deserialize;

/// The agents' node APIs and their token.
#[derive(Debug)]
pub struct RemoteAgents {
    urls: RwLock<Vec<String>>,
    /// The node each URL answered as, so that a node that stops answering is still named.
    names: std::sync::Mutex<std::collections::HashMap<String, String>>,
    token: String,
    agent: ureq::Agent,
}

/// One slice as `GET /v1/slices` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteSlice {
    /// `packets`, `tls` or `sockets`.
    pub kind: String,
    /// File name.
    pub file: String,
    /// Bytes.
    pub bytes: u64,
    /// First row, ns.
    pub start_ns: i64,
    /// Last row, ns.
    pub end_ns: i64,
}

#[derive(Deserialize)]
struct SliceList {
    node: String,
    slices: Vec<RemoteSlice>,
}

/// One agent's `GET /v1/boundaries`.
#[derive(Debug)]
pub struct AgentBoundaries {
    /// The node's name (its URL when it never answered).
    pub node: String,
    /// The agent's node API.
    pub url: String,
    /// The answer, or why there is none.
    pub answer: Result<serde_json::Value, String>,
}

/// What one node gave for a window.
#[derive(Debug)]
pub struct NodePull {
    /// Node name (the URL when the node never answered).
    pub node: String,
    /// Where it was pulled from.
    pub url: String,
    /// Slices now in the mirror, each with its path there.
    pub slices: Vec<(RemoteSlice, PathBuf)>,
    /// Why the node is not whole: unreachable, or a slice that could not be fetched.
    pub error: Option<String>,
    /// Whether the node answered at all.
    pub reached: bool,
    /// The node's pod cgroups when the snapshot was made.
    pub cgroups: Vec<remora_agent::cgroups::PodCgroup>,
}

impl RemoteAgents {
    /// Agents at `urls` (`http://host:port`), all with `token`.
    pub fn new(urls: Vec<String>, token: String) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(3)))
            .timeout_recv_response(Some(Duration::from_secs(10)))
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self {
            urls: RwLock::new(
                urls.into_iter()
                    .map(|u| u.trim_end_matches('/').to_owned())
                    .collect(),
            ),
            names: Default::default(),
            token,
            agent,
        }
    }

    /// The agents now.
    pub fn urls(&self) -> Vec<String> {
        self.urls.read().map(|u| u.clone()).unwrap_or_default()
    }

    /// Replaces the agents (discovery found others).
    pub fn set_urls(&self, urls: Vec<String>) {
        if let Ok(mut u) = self.urls.write() {
            *u = urls;
        }
    }

    fn get(&self, url: &str) -> Result<ureq::http::Response<ureq::Body>, String> {
        let response = self
            .agent
            .get(url)
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(response),
            401 => Err(format!(
                "GET {url}: 401: the agent refused the token; agents and the analyzer must share one (the remora-token Secret)"
            )),
            s => Err(format!("GET {url}: HTTP {s}")),
        }
    }

    /// The node `url` last answered as.
    pub fn known_name(&self, url: &str) -> Option<String> {
        self.names.lock().ok()?.get(url).cloned()
    }

    fn remember(&self, url: &str, node: &str) {
        if let Ok(mut names) = self.names.lock() {
            names.insert(url.to_owned(), node.to_owned());
        }
    }

    /// `GET /v1/boundaries` of one agent.
    pub fn boundaries(&self, url: &str) -> Result<serde_json::Value, String> {
        let answer: serde_json::Value = self
            .get(&format!("{url}/v1/boundaries"))?
            .into_body()
            .read_json()
            .map_err(|e| format!("{url}/v1/boundaries: {e}"))?;
        if let Some(node) = answer["node"].as_str() {
            self.remember(url, node);
        }
        Ok(answer)
    }

    /// `GET <path>` of every agent, in parallel: (node, its JSON or why not).
    pub fn all_json(&self, path: &str) -> Vec<(String, Result<serde_json::Value, String>)> {
        let urls = self.urls();
        std::thread::scope(|scope| {
            let handles: Vec<_> = urls
                .iter()
                .map(|url| {
                    scope.spawn(move || {
                        let answer = self.get(&format!("{url}{path}")).and_then(|r| {
                            r.into_body()
                                .read_json::<serde_json::Value>()
                                .map_err(|e| format!("{url}{path}: {e}"))
                        });
                        (self.known_name(url).unwrap_or_else(|| url.clone()), answer)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    }

    /// Every agent's boundaries, asked in parallel.
    pub fn all_boundaries(&self) -> Vec<AgentBoundaries> {
        let urls = self.urls();
        std::thread::scope(|scope| {
            let handles: Vec<_> = urls
                .iter()
                .map(|url| scope.spawn(move || (url.clone(), self.boundaries(url))))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .map(|(url, answer)| AgentBoundaries {
                    // The node it answered as now, or last time when it does not answer.
                    node: self.known_name(&url).unwrap_or_else(|| url.clone()),
                    url,
                    answer,
                })
                .collect()
        })
    }

    /// [`all_boundaries`](Self::all_boundaries) off the async runtime's threads.
    pub async fn all_boundaries_async(self: std::sync::Arc<Self>) -> Vec<AgentBoundaries> {
        tokio::task::spawn_blocking(move || self.all_boundaries())
            .await
            .unwrap_or_default()
    }

    /// Pulls every agent's slices of `[start_ns, end_ns]` into `mirror` (`<data>/remote`),
    /// one thread per agent, skipping nodes named in `skip` (the local recorder).
    pub fn pull_all(
        &self,
        start_ns: i64,
        end_ns: i64,
        mirror: &Path,
        skip: &[String],
    ) -> Vec<NodePull> {
        let urls = self.urls();
        std::thread::scope(|scope| {
            let handles: Vec<_> = urls
                .iter()
                .map(|url| scope.spawn(move || self.pull(url, start_ns, end_ns, mirror, skip)))
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect()
        })
    }

    fn pull(
        &self,
        url: &str,
        start_ns: i64,
        end_ns: i64,
        mirror: &Path,
        skip: &[String],
    ) -> Option<NodePull> {
        let mut pull = NodePull {
            node: self.known_name(url).unwrap_or_else(|| url.to_owned()),
            url: url.to_owned(),
            slices: Vec::new(),
            error: None,
            reached: false,
            cgroups: Vec::new(),
        };
        let list_url = format!(
            "{url}/v1/slices?start={}&end={}",
            start_ns.div_euclid(1_000_000),
            end_ns.div_euclid(1_000_000)
        );
        let list: SliceList = match self.get(&list_url).and_then(|r| {
            r.into_body()
                .read_json()
                .map_err(|e| format!("{list_url}: {e}"))
        }) {
            Ok(l) => l,
            Err(e) => {
                pull.error = Some(e);
                return Some(pull);
            }
        };
        if skip.contains(&list.node) || !remora_agent::config::valid_node_name(&list.node) {
            if !skip.contains(&list.node) {
                pull.error = Some(format!(
                    "{url} calls itself `{}`, not a valid node name",
                    list.node
                ));
                return Some(pull);
            }
            return None;
        }
        pull.node = list.node.clone();
        pull.reached = true;
        self.remember(url, &list.node);
        // Older agents have no cgroup map: their pods are named by address only.
        if let Ok(answer) = self.get(&format!("{url}/v1/cgroups"))
            && let Ok(v) = answer.into_body().read_json::<serde_json::Value>()
        {
            pull.cgroups = serde_json::from_value(v["cgroups"].clone()).unwrap_or_default();
        }
        for slice in list.slices {
            if slice.end_ns < start_ns || slice.start_ns > end_ns {
                continue;
            }
            if remora_agent::store::parse_slice_name(&slice.file).is_none()
                || !remora_agent::store::KINDS.contains(&slice.kind.as_str())
            {
                pull.error = Some(format!(
                    "{url} listed a slice named `{}/{}`",
                    slice.kind, slice.file
                ));
                continue;
            }
            match self.fetch(url, &list.node, &slice, mirror) {
                Ok(path) => pull.slices.push((slice, path)),
                Err(e) => {
                    // Retention on the node may have taken it since the listing; either way
                    // the node is not whole and says why.
                    pull.error = Some(e);
                }
            }
        }
        Some(pull)
    }

    /// One slice into the mirror (already there with its size: kept).
    fn fetch(
        &self,
        url: &str,
        node: &str,
        slice: &RemoteSlice,
        mirror: &Path,
    ) -> Result<PathBuf, String> {
        let dir = mirror.join(node).join(&slice.kind);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let target = dir.join(&slice.file);
        if fs::metadata(&target).is_ok_and(|m| m.len() == slice.bytes) {
            return Ok(target);
        }
        let part = dir.join(format!(".{}.part", slice.file));
        let file_url = format!("{url}/v1/slices/{}/{}", slice.kind, slice.file);
        let response = self.get(&file_url)?;
        let mut out = fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
        let mut body =
            std::io::BufReader::with_capacity(1 << 20, response.into_body().into_reader());
        let copied = std::io::copy(&mut body, &mut out)
            .map_err(|e| format!("{file_url}: the transfer stopped: {e}"));
        let result = copied.and_then(|n| {
            out.flush()
                .and_then(|_| out.sync_all())
                .map_err(|e| format!("{}: {e}", part.display()))?;
            if n != slice.bytes {
                return Err(format!(
                    "{file_url}: {n} bytes arrived, {} expected",
                    slice.bytes
                ));
            }
            parquet::file::reader::SerializedFileReader::new(
                fs::File::open(&part).map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("{file_url}: not a readable Parquet slice: {e}"))?;
            fs::rename(&part, &target).map_err(|e| format!("{}: {e}", target.display()))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&part);
            return Err(e);
        }
        Ok(target)
    }
}

/// Links what `pull` fetched into the snapshot being built in `tmp`; returns the node's totals
/// with its status. The mirror's copies of a complete node are removed once linked.
pub(super) fn link_pulled(
    pull: &NodePull,
    tmp: &Path,
    files: &mut Vec<super::SnapshotFile>,
    drops: &mut remora_agent::drops::SliceDrops,
) -> Result<super::SnapshotNode, super::StoreError> {
    use super::io;
    let mut total = super::SnapshotNode {
        name: pull.node.clone(),
        status: match (&pull.error, pull.reached) {
            (None, _) => "complete".into(),
            (Some(_), true) => "partial".into(),
            (Some(_), false) => "unreachable".into(),
        },
        reason: pull.error.clone(),
        source: Some(pull.url.clone()),
        files: 0,
        packets: 0,
        bytes: 0,
    };
    super::write_cgroups(tmp, &pull.node, &pull.cgroups)?;
    for (slice, path) in &pull.slices {
        let dir = tmp.join("capture").join(&pull.node).join(&slice.kind);
        fs::create_dir_all(&dir).map_err(|e| io(dir.display(), e))?;
        let target = dir.join(&slice.file);
        if fs::hard_link(path, &target).is_err() {
            fs::copy(path, &target).map_err(|e| io(path.display(), e))?;
        }
        let rows = super::parquet_rows(&target);
        let checksum =
            crate::services::checksum::checksum(&target).map_err(|e| io(target.display(), e))?;
        if slice.kind == "packets" {
            total.packets += rows;
            if let Some(d) = remora_agent::drops::read_slice_drops(&target) {
                drops.add(&d);
            }
        }
        total.files += 1;
        total.bytes += slice.bytes;
        files.push(super::SnapshotFile {
            node: pull.node.clone(),
            kind: slice.kind.clone(),
            file: slice.file.clone(),
            bytes: slice.bytes,
            rows,
            checksum: Some(checksum),
        });
    }
    if pull.error.is_none() {
        for (_, path) in &pull.slices {
            let _ = fs::remove_file(path);
        }
    }
    Ok(total)
}
