//! `udp-blast`: sends a known number of UDP datagrams as fast as asked, with `sendmmsg`.
//!
//! Each payload starts with its sequence number (u64 LE) so captures can be matched packet by
//! packet; the rest is fresh pseudo-random bytes for every datagram, so that nothing downstream
//! (zstd in the recorder, say) can compress it away.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use clap::Parser;

/// Sends UDP datagrams.
#[derive(Parser, Debug)]
#[command(
    name = "udp-blast",
    about = "Send a known number of UDP datagrams at a given rate"
)]
struct Args {
    /// Destination, e.g. 198.18.0.2:9999
    #[arg(long)]
    dst: SocketAddr,
    /// Number of datagrams
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Payload bytes per datagram (at least 8)
    #[arg(long, default_value_t = 18)]
    size: usize,
    /// Datagrams per second (0: as fast as possible)
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop after this many seconds even if not all were sent
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
}

const BATCH: usize = 64;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.size >= 8, "--size must be at least 8");
    let bind: SocketAddr = if args.dst.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(args.dst)?;
    let fd = socket.as_raw_fd();
    let mut payloads = vec![vec![0u8; args.size]; BATCH];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let mut sent = 0u64;
    let mut failed = 0u64;
    while sent < args.count && Instant::now() < deadline {
        let n = (args.count - sent).min(BATCH as u64) as usize;
        for (i, p) in payloads.iter_mut().take(n).enumerate() {
            p[..8].copy_from_slice(&(sent + i as u64).to_le_bytes());
            for chunk in p[8..].chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
            }
        }
        let mut iovs: Vec<libc::iovec> = payloads
            .iter_mut()
            .take(n)
            .map(|p| libc::iovec {
                iov_base: p.as_mut_ptr().cast(),
                iov_len: p.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is a valid "no address, no control" header.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: msgs points at n initialised headers whose iovecs point into live buffers.
        let rc = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
        if rc <= 0 {
            failed += 1;
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        sent += rc as u64;
        if args.rate > 0 {
            let due = start + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"sent\":{sent},\"seconds\":{secs:.6},\"pps\":{:.0},\"send_errors\":{failed}}}",
        sent as f64 / secs.max(1e-9)
    );
    Ok(())
}
