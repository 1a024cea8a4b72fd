//! The agent's error type: every variant says what failed and what to do about it.

use std::path::PathBuf;

/// Errors of the recorder and its node API.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A named interface does not exist in this network namespace.
    #[error(
        "interface `{name}` does not exist in this network namespace (available: {available}); \
         check the name with `ip link` or leave --interfaces out to record every interface that is up"
    )]
    NoSuchInterface {
        /// The name that was asked for.
        name: String,
        /// The interfaces that do exist, comma separated.
        available: String,
    },
    /// The process lacks a privilege the kernel hooks need.
    #[error(
        "{action} was refused by the kernel ({source}); the recorder needs root, or the \
         capabilities CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON: run it with sudo or grant them"
    )]
    Privilege {
        /// What was being done.
        action: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Loading the eBPF object or one of its programs failed.
    #[error("loading the eBPF recorder failed: {0}")]
    Load(String),
    /// Attaching a program to an interface failed.
    #[error("attaching the recorder to `{interface}` ({direction}) failed: {message}")]
    Attach {
        /// Interface name.
        interface: String,
        /// `ingress` or `egress`.
        direction: &'static str,
        /// What the kernel or aya said.
        message: String,
    },
    /// The data directory cannot be used.
    #[error(
        "data directory {path} is not usable: {source}; create it with write permission for this \
         user or choose another with --data-dir"
    )]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a slice failed (for example a full disk); recording goes on with the next slice.
    #[error("writing slice {path} failed: {message}")]
    SliceWrite {
        /// The temporary file that was being written.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Any other I/O failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl AgentError {
    /// Wraps an I/O error with a sentence saying what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for the agent.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
