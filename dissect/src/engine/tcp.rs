//! TCP connections: each segment's bookkeeping (handshake, close, analysis, reassembly into
//! the connection's parser), and a finished connection turned into its rows.

use super::*;

impl Engine {
    pub(super) fn tcp(
        &mut self,
        ts_ns: i64,
        src_ip: std::net::IpAddr,
        dst_ip: std::net::IpAddr,
        seg: net::Tcp<'_>,
    ) {
        let src = Endpoint {
            ip: src_ip,
            port: seg.src_port,
        };
        let dst = Endpoint {
            ip: dst_ip,
            port: seg.dst_port,
        };
        let k = key(src, dst);
        let syn = seg.flags & flags::SYN != 0;
        let ack = seg.flags & flags::ACK != 0;
        // A SYN with a new initial sequence number on a known tuple starts a new connection
        // (port reuse), as does any SYN on a finished or reset one; a SYN that repeats the
        // first one's number is a retransmission of it.
        let reuse = syn
            && !ack
            && self.tcp.get(&k).is_some_and(|c| match c.syn_seq {
                Some(first) => first != seg.seq,
                None => c.closed(),
            });
        if reuse && let Some(old) = self.tcp.remove(&k) {
            self.close(old, Unclosed::Open);
        }
        // The table's size first: the lookup is only needed when it is full.
        if self.tcp.len() >= self.limits.max_conns && !self.tcp.contains_key(&k) {
            self.enforce_limits();
        }
        let id = self.frame;
        let conn = self.tcp.entry(k).or_insert_with(|| {
            // The initiator: the SYN's sender, the SYN-ACK's receiver, else the sender of the
            // first packet unless it comes from the lower (server-like) port.
            let client = if syn && ack {
                1
            } else if syn || src.port > dst.port {
                0
            } else {
                1
            };
            TcpConn::new(id, [src, dst], client, ts_ns)
        });
        let dir = usize::from(conn.sides[0] != src);
        conn.last_ns = ts_ns;
        conn.packets[dir] += 1;
        conn.bytes[dir] += u64::from(seg.payload_wire_len);
        if syn && !ack {
            conn.syn_ns.get_or_insert(ts_ns);
            conn.last_syn_ns = Some(ts_ns);
            conn.syn_seq.get_or_insert(seg.seq);
            conn.client = dir;
        } else if syn && ack {
            conn.synack_ns.get_or_insert(ts_ns);
            // The SYN-ACK names the client's number when the SYN itself was not captured.
            conn.syn_seq.get_or_insert(seg.ack.wrapping_sub(1));
        } else if ack
            && conn.handshake_us.is_none()
            && dir == conn.client
            && let (Some(s), Some(_)) = (conn.syn_ns, conn.synack_ns)
        {
            conn.handshake_us = Some((ts_ns - s) / 1000);
            // Wireshark's initial RTT (the out-of-order threshold) starts at the last SYN, so
            // a retransmitted SYN does not stretch it.
            conn.analysis
                .set_initial_rtt(ts_ns - conn.last_syn_ns.unwrap_or(s));
        }
        if seg.flags & flags::RST != 0 {
            conn.resets += 1;
            conn.rst_by.get_or_insert(dir);
            conn.rst_ns.get_or_insert(ts_ns);
        }
        if seg.flags & flags::FIN != 0 {
            conn.fins += 1;
            conn.fin_by[dir] = true;
        }
        conn.analysis.packet(
            dir,
            &Segment {
                ts_ns,
                seq: seg.seq,
                ack: seg.ack,
                flags: seg.flags,
                window: seg.window,
                len: seg.payload_wire_len,
            },
        );
        let TcpConn {
            halves, l7, sides, ..
        } = &mut *conn;
        let ports = (sides[0].port, sides[1].port);
        let stats = &mut self.out.stats;
        halves[dir].segment(
            ts_ns,
            seg.seq,
            syn,
            seg.payload,
            seg.payload_wire_len,
            &mut |chunk| {
                on_chunk(l7, dir, ports, chunk, stats);
            },
        );
        // The connection found above serves for the rest: one lookup per packet.
        collect(conn, &mut self.out, &mut self.dns_pending);
        if conn.closed()
            && let L7::Http1(h) = &mut conn.l7
        {
            for p in &mut h.parsers {
                p.release_spare();
            }
            if h.pending.is_empty() {
                h.pending = VecDeque::new();
            }
        }
        let now = conn.buffered();
        // `held` includes this connection's previous figure.
        self.held = self.held.saturating_sub(conn.held) + now;
        conn.held = now;
        if self.held > self.limits.max_buffered {
            self.enforce_limits();
        }
    }

    /// Turns a connection into its rows; `unclosed` says why it ends if it saw no FIN or RST.
    pub(super) fn close(&mut self, mut conn: TcpConn, unclosed: Unclosed) {
        let mark = self.out.calls.len();
        self.held = self.held.saturating_sub(conn.held);
        conn.held = 0;
        let TcpConn {
            halves, l7, sides, ..
        } = &mut conn;
        let ports = (sides[0].port, sides[1].port);
        for (dir, half) in halves.iter_mut().enumerate() {
            let stats = &mut self.out.stats;
            half.flush(&mut |chunk| on_chunk(l7, dir, ports, chunk, stats));
        }
        if let L7::Http1(h) = &mut conn.l7 {
            for p in &mut h.parsers {
                p.close(conn.last_ns);
                self.out.stats.http_errors += p.parse_errors;
            }
        }
        if let L7::Http2(h) = &mut conn.l7 {
            h.close();
            self.out.stats.http_errors += h.errors;
        }
        // Every call pushed from here on is marked with the connection's handshake and
        // plaintext origin once, below.
        collect_messages(&mut conn, &mut self.out, &mut self.dns_pending);
        let l7 = match &conn.l7 {
            L7::Http1(h) => {
                let (client, server) = (conn.sides[h.req_dir], conn.sides[1 - h.req_dir]);
                let mut calls = conn.calls;
                for req in h.pending.iter().cloned() {
                    calls += 1;
                    let mut call = http_call(conn.id, calls, client, server, Some(req), None);
                    call.error_type = Some(if conn.resets > 0 {
                        "tcp_reset"
                    } else {
                        "pair_not_found"
                    });
                    self.out.calls.push(call);
                }
                "HTTP"
            }
            L7::Dns(_) => "DNS",
            L7::Tls(_) => "TLS",
            L7::Http2(_) => "HTTP/2",
            _ => "",
        };
        if let L7::Tls(t) = &mut conn.l7
            && !t.decrypted
            && let Some(call) = tls_call(conn.id, conn.sides, t, true)
        {
            self.out.calls.push(call);
        }
        if let Some(pushed) = self.out.calls.get_mut(mark..) {
            annotate(&conn, pushed);
        }
        if conn.plaintext {
            // The packets of the connection make its `conns` row.
            return;
        }
        let c = conn.client;
        let counters = conn.analysis.counters();
        let both =
            |f: fn(&crate::tcp_analysis::Counters) -> u64| [f(&counters[c]), f(&counters[1 - c])];
        let close = if conn.resets > 0 {
            "rst"
        } else if conn.fin_by == [true, true] {
            "fin"
        } else if conn.fin_by.contains(&true) {
            "half_closed"
        } else {
            match unclosed {
                Unclosed::Open => "open",
                Unclosed::Idle => "timeout",
                Unclosed::Evicted => "evicted",
            }
        };
        self.out.conns.push(Conn {
            conn_id: conn.id,
            src: conn.sides[c],
            dst: conn.sides[1 - c],
            first_ns: conn.first_ns,
            last_ns: conn.last_ns,
            handshake_us: conn.handshake_us,
            packets: [conn.packets[c], conn.packets[1 - c]],
            bytes: [conn.bytes[c], conn.bytes[1 - c]],
            retransmissions: both(|x| x.retransmissions),
            out_of_order: both(|x| x.out_of_order),
            lost_segments: both(|x| x.lost_segments),
            zero_windows: both(|x| x.zero_windows),
            dup_acks: both(|x| x.dup_acks),
            data_rtt_us: conn.analysis.data_rtt_us(),
            fins: conn.fins,
            resets: conn.resets,
            rst_by: conn
                .rst_by
                .map(|d| if d == c { "client" } else { "server" }),
            rst_ns: conn.rst_ns,
            close,
            l7,
            nat: self.nat_view(&conn.sides[c], &conn.sides[1 - c]),
        });
    }
}
