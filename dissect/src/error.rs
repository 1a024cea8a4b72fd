//! Errors of the dissection engine's inputs (bad packets never error: they are counted).

/// What can go wrong before dissection starts.
#[derive(Debug, thiserror::Error)]
pub enum DissectError {
    /// The capture file cannot be read as pcap or pcapng.
    #[error("capture file: {0}")]
    Capture(String),
}
