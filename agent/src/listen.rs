//! Binding the API's listening socket when a process that held it has only just gone.
//!
//! After a crash or a `kill -9`, a supervisor (systemd, the kubelet, an operator's shell)
//! starts Remora again at once. The port can still be taken for a moment then: a child that
//! was being spawned when its parent died holds a copy of the socket until its `exec`, and the
//! kernel tears a killed process down after its parent has been told it exited. Failing at
//! that moment would turn one crash into two; so a port in use is retried for a short, bounded
//! time before the error, which still names the address and what to do.

use std::{io, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;

/// How long a port in use is retried before [`bind`] gives up: long enough for a killed
/// process's socket to go, short enough that a port held by another running server is
/// reported while the operator still watches.
pub const BIND_RETRY: Duration = Duration::from_secs(3);

/// Time between two attempts.
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// Binds `addr`; while it is in use (`EADDRINUSE`), tries again every 100 ms for up to
/// `retry`, saying so once. Any other error, or the port still in use after `retry`, is
/// returned as it is.
pub async fn bind(addr: SocketAddr, retry: Duration) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + retry;
    let mut warned = false;
    loop {
        match TcpListener::bind(addr).await {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() + RETRY_EVERY <= deadline =>
            {
                if !warned {
                    tracing::warn!(
                        "{addr} is in use; trying again for up to {} s (a process that has just \
                         stopped may still hold it)",
                        retry.as_secs_f32()
                    );
                    warned = true;
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_once_the_port_is_let_go() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = held.local_addr().expect("its address");
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(350)).await;
            drop(held);
        });
        let started = std::time::Instant::now();
        let listener = bind(addr, Duration::from_secs(5))
            .await
            .expect("bound after the release");
        assert_eq!(listener.local_addr().expect("bound address"), addr);
        // It did wait for the release: the first attempts failed.
        assert!(started.elapsed() >= Duration::from_millis(300));
        release.await.expect("release task");
    }

    #[tokio::test]
    async fn a_port_that_stays_taken_is_an_error_after_the_retry() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = held.local_addr().expect("its address");
        let started = std::time::Instant::now();
        let err = bind(addr, Duration::from_millis(400))
            .await
            .expect_err("the port stays taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(held);
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        // An address this host does not have: refused at once, not after the retry.
        let addr: SocketAddr = "198.18.255.254:0".parse().expect("address");
        let started = std::time::Instant::now();
        let err = bind(addr, Duration::from_secs(5))
            .await
            .expect_err("not an address of this host");
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
