# Both binaries, two images:
#   docker build --target agent    -t ghcr.io/remora-dev/remora-agent:0.1.0 .
#   docker build --target analyzer -t ghcr.io/remora-dev/remora:0.1.0 .
# The agent's kernel programs need the nightly toolchain with rust-src and bpf-linker (LLVM 22),
# exactly as `cargo xtask setup` installs them (docs/development.md).

FROM rust:1.95-trixie AS build
ENV CARGO_TERM_COLOR=never
RUN rustup toolchain install nightly --profile minimal --component rust-src \
 && NIGHTLY_LIB="$(rustc +nightly --print sysroot)/lib" \
 && mkdir -p /opt/llvm/lib \
 && for so in "$NIGHTLY_LIB"/libLLVM.so.22*; do \
      ln -sf "$so" /opt/llvm/lib/libLLVM.so; \
      ln -sf "$so" "/opt/llvm/lib/$(basename "$so")"; \
    done \
 && LLVM_PREFIX=/opt/llvm cargo install --locked bpf-linker --version 0.13.0 \
      --no-default-features --features llvm-22
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p remora-agent -p remora-analyzer --bins \
 && install -D -m 0755 target/release/remora-agent /out/remora-agent \
 && install -D -m 0755 target/release/remora /out/remora

# The recorder: runs as root in a privileged (or capability-only) DaemonSet pod.
FROM debian:trixie-slim AS agent
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/remora-agent /usr/local/bin/remora-agent
ENTRYPOINT ["/usr/local/bin/remora-agent"]

# The analyzer: non-root, no capabilities; libpcap for `bpf_filter` on PCAP exports.
FROM debian:trixie-slim AS analyzer
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libpcap0.8t64 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 remora \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin remora
COPY --from=build /out/remora /usr/local/bin/remora
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/remora"]
CMD ["serve", "--data-dir=/data", "--listen=0.0.0.0:8898"]
