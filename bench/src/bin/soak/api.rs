//! The soak's view of `remora up`: starting it on the veth pair, and its API through curl in
//! the recorder's namespace, errors as values (a soak counts them rather than stopping).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use remora_bpf_tests::{
    netns::{IF_A, VethPair},
    proc::AgentProc,
};
use serde_json::Value;

/// The API port of `remora up` in its namespace.
pub const PORT: u16 = 18871;

/// Now, unix ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The API of `remora up` in its namespace, errors as values (a soak counts them).
pub struct Api {
    /// The recorder's namespace.
    pub ns: String,
    /// Its bearer token.
    pub token: String,
}

impl Api {
    /// Any request: the status and the JSON body (Null when it is not JSON).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("http://127.0.0.1:{PORT}{path}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-sS", "-m", "120"])
            .args(["-w", "\n%{http_code}", "-X", method])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(b.to_string());
        }
        let out = cmd.arg(&url).output().context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (json, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code: u16 = code.trim().parse().unwrap_or(0);
        let value = serde_json::from_str(json).unwrap_or(Value::Null);
        Ok((code, value))
    }

    /// A request that must answer 2xx.
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let (code, v) = self.call(method, path, body)?;
        if !(200..300).contains(&code) {
            bail!("{method} {path}: {code} {v}");
        }
        Ok(v)
    }

    /// Polls GET `path` until `done` accepts it (300 s at most).
    pub fn wait(&self, path: &str, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let v = self.ok("GET", path, None)?;
            if done(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("{path} did not finish in 300 s: {v}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// `remora up` on side A of `pair`, recording its veth, on `data`.
pub fn start_up(pair: &VethPair, data: &Path) -> AgentProc {
    AgentProc::start_up(
        &pair.a,
        data,
        PORT,
        &[
            "--interfaces",
            IF_A,
            "--slice-duration",
            "2s",
            "--retention-bytes",
            "2GiB",
        ],
    )
}
