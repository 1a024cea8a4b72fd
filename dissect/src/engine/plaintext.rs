//! TLS plaintext from the recorder's uprobes, dissected as its connection's bytes.

use super::*;

impl Engine {
    /// Feeds TLS plaintext (what `SSL_write` sent or `SSL_read` returned, from uprobes) of the
    /// connection between `local` (the process's end) and `peer`: `outbound` for writes. The
    /// plaintext is dissected as the connection's bytes would be, without reassembly (it comes
    /// whole and in order), and the connection's packets, when recorded too, give its `conns`
    /// row and its handshake time; its TLS handshake is then no call of its own.
    ///
    /// When both ends' processes are hooked (client and server on one node), each byte comes
    /// twice, once as written and once as read: the stream follows the process it heard first,
    /// and the other's chunks count as copies.
    pub fn push_plaintext(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        bytes: &[u8],
    ) {
        self.plaintext(ts_ns, local, peer, outbound, Chunk::Data { ts_ns, bytes });
    }

    /// Says that `len` bytes of a plaintext stream are missing (the recorder cut a long call),
    /// after what [`Engine::push_plaintext`] fed with the same ends and direction.
    pub fn plaintext_gap(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        len: u64,
    ) {
        self.plaintext(ts_ns, local, peer, outbound, Chunk::Gap { ts_ns, len });
    }

    fn plaintext(
        &mut self,
        ts_ns: i64,
        local: Endpoint,
        peer: Endpoint,
        outbound: bool,
        chunk: Chunk<'_>,
    ) {
        let k = crate::flow::plain_key(local, peer);
        if !self.tcp.contains_key(&k) {
            if self.tcp.len() >= self.limits.max_conns {
                self.enforce_limits();
            }
            // The encrypted connection, when its packets are recorded: its id, its handshake.
            let (mut id, mut handshake_us, mut tls_info) = (None, None, None);
            if let Some(packets) = self.tcp.get_mut(&key(local, peer)) {
                id = Some(packets.id);
                handshake_us = packets.handshake_us;
                if let L7::Tls(t) = &mut packets.l7 {
                    t.decrypted = true;
                    tls_info = crate::pairing::tls_info(t);
                }
            }
            let id = id.unwrap_or_else(|| {
                self.plain_ids += 1;
                PLAINTEXT_IDS + self.plain_ids
            });
            let mut conn = TcpConn::new(id, [local, peer], 0, ts_ns);
            conn.handshake_us = handshake_us;
            conn.plaintext = true;
            conn.tls_info = tls_info.map(Box::new);
            self.tcp.insert(k, conn);
        }
        let Some(conn) = self.tcp.get_mut(&k) else {
            return;
        };
        if conn.sides[0] != local {
            // The other end's process: the same bytes, already followed from this end.
            self.out.stats.duplicates += 1;
            return;
        }
        let dir = usize::from(!outbound);
        conn.last_ns = ts_ns;
        conn.packets[dir] += 1;
        if let Chunk::Data { bytes, .. } = &chunk {
            conn.bytes[dir] += bytes.len() as u64;
        }
        let ports = (conn.sides[0].port, conn.sides[1].port);
        on_chunk(&mut conn.l7, dir, ports, chunk, &mut self.out.stats);
        collect(conn, &mut self.out, &mut self.dns_pending);
    }
}
