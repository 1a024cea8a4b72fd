//! Starting, running and stopping the recorder: the order of operations of one agent process.

use std::{
    future::Future,
    path::Path,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use tokio::sync::watch;

use crate::{
    auth::load_or_create_token,
    clock::TaiToUtc,
    collector::{Collector, SharedDecoder, WriterLink},
    config::{AgentConfig, HookMode},
    decode::{Decoder, LinkHeaders},
    ebpf::{PacketMap, Recorder},
    error::{AgentError, Result},
    interfaces::{self, Interface},
    metrics::{Metrics, add},
    node_api::{self as api, ApiState},
    perf_ring::{Ring, open_per_cpu},
    ring_buffer::BpfRing,
    schema::PACKETS_KIND,
    slice::{SliceEncoder, SliceFiles},
    store::{self, prepare_dir},
    writer::{WriterSettings, run_writer},
};

/// What a collector needs besides its rings.
struct CollectorParts {
    decoder: SharedDecoder,
    encoder: SliceEncoder,
    link: WriterLink,
    page_limit: usize,
    metrics: Arc<Metrics>,
}

/// Runs a collector over `rings` on its own thread until `stop` is set.
fn spawn_collector<R: Ring + Send + 'static>(
    rings: Vec<R>,
    parts: CollectorParts,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let CollectorParts {
        decoder,
        encoder,
        link,
        page_limit,
        metrics,
    } = parts;
    let collector = Collector::new(rings, decoder, encoder, link, page_limit, metrics);
    std::thread::Builder::new()
        .name("remora-collect".into())
        .spawn(move || collector.run(&stop))
        .map_err(|e| AgentError::io("starting the collector thread", e))
}

/// Resolves on Ctrl-C or SIGTERM (what `remora-agent` and `remora up` stop on).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// What a finished run recorded.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Rows handed to slice files.
    pub rows_written: u64,
    /// Slices published.
    pub slices_written: u64,
    /// Packets lost to full rings (kernel counters).
    pub dropped_packets: u64,
}

/// Things the caller may want once the agent is up (the CLI prints them).
#[derive(Debug, Clone)]
pub struct Started {
    /// Where packet slices appear.
    pub packets_dir: std::path::PathBuf,
    /// Node API address, if served.
    pub api: Option<std::net::SocketAddr>,
    /// Token file of the node API.
    pub token_file: std::path::PathBuf,
    /// Interfaces attached at start.
    pub interfaces: Vec<String>,
}

/// Runs the recorder until `shutdown` resolves; `on_started` is called once recording runs.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: impl FnOnce(&Started),
) -> Result<RunSummary> {
    run_with_routes(config, axum::Router::new(), shutdown, on_started).await
}

/// [`run`], serving `extra` routes next to the node API (on the same address and token).
pub async fn run_with_routes(
    config: AgentConfig,
    extra: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_started: impl FnOnce(&Started),
) -> Result<RunSummary> {
    config.validate()?;
    prepare_dir(&config.data_dir)?;
    let packets_dir = config.kind_dir(PACKETS_KIND);
    prepare_dir(&packets_dir)?;
    let node_dir = config.data_dir.join("capture").join(&config.node);
    let metrics = Arc::new(Metrics::default());
    let swept = store::sweep_temp_files(&packets_dir);
    if swept > 0 {
        tracing::warn!(
            files = swept,
            "removed unfinished slices of an earlier run that was killed"
        );
        add(&metrics.swept_temp_files, swept as u64);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        tracing::warn!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux); packet recording works without it, \
             but later socket and TLS hooks will need a kernel built with CONFIG_DEBUG_INFO_BTF"
        );
    }

    let all = interfaces::list()?;
    let chosen = interfaces::select(&all, &config.interfaces)?;
    if chosen.is_empty() {
        return Err(AgentError::Config(
            "no interface is up; bring one up or name them with --interfaces".into(),
        ));
    }

    let listener = match config.listen {
        Some(addr) => Some(crate::listen::bind(addr, crate::listen::BIND_RETRY).await.map_err(|e| {
            AgentError::io(
                format!("binding the node API to {addr} (choose another with --listen, or `--listen off`)"),
                e,
            )
        })?),
        None => None,
    };
    let api_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
    // Remora's own API traffic: exactly its address and port, so that another service on the
    // same port elsewhere (another namespace, another pod) is recorded. An API on every
    // address is each address of this namespace with the port, kept current as addresses
    // come and go (`watch_interfaces`); only a namespace without addresses falls back to the
    // port.
    let mut exclude = config.exclude_ports.clone();
    let mut exclude_endpoints = Vec::new();
    let mut wildcard_port = None;
    match api_addr {
        Some(a) if a.ip().is_unspecified() => {
            exclude_endpoints = wildcard_endpoints(a.port());
            if exclude_endpoints.is_empty() {
                exclude.push(a.port());
            } else {
                wildcard_port = Some(a.port());
            }
        }
        Some(a) => exclude_endpoints.push(a),
        None => {}
    }
    let token = load_or_create_token(&config.token_file)?;

    let mut recorder = Recorder::load(&config, &exclude, &exclude_endpoints)?;
    let packet_map = recorder.take_packet_map()?;
    let ids = crate::sockets::record::SocketIds::new();
    let sockets = start_socket_events(&config, &mut recorder, ids)?;
    let tls = start_tls(&config, &mut recorder, ids)?;
    let decoder: SharedDecoder = Arc::new(RwLock::new(Arc::new(Decoder {
        clock: TaiToUtc::sample(),
        snaplen: config.snaplen,
        l2_len: l2_map(&all),
    })));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stop_collector = Arc::new(AtomicBool::new(false));
    // A few row groups in flight at most: a slow disk turns into full rings and counted drops,
    // not into memory.
    let (to_writer, from_collector) = std::sync::mpsc::sync_channel(ROW_GROUPS_IN_FLIGHT);
    let (written_tx, written_rx) = std::sync::mpsc::channel();
    let encoder = SliceEncoder::new(
        config.compression,
        config.slice_duration,
        config.slice_max_bytes,
    )
    .map_err(|e| AgentError::io("creating the payload compressor", e))?;
    let link = WriterLink {
        to_writer,
        written: written_rx,
    };
    let page_limit = SliceEncoder::page_payload_limit(config.slice_max_bytes);
    let stop = stop_collector.clone();
    // Held until the agent stops: the kernel empties a perf event array when its last
    // user-space descriptor closes.
    let mut _perf_array = None;
    let parts = CollectorParts {
        decoder: decoder.clone(),
        encoder,
        link,
        page_limit,
        metrics: metrics.clone(),
    };
    let collector = match packet_map {
        PacketMap::PerfEventArray(map) => {
            let rings = open_per_cpu(map.fd(), config.ring_pages())?;
            _perf_array = Some(map);
            spawn_collector(rings, parts, stop)?
        }
        PacketMap::RingBuffer(map) => {
            let ring = BpfRing::open(map)
                .map_err(|e| AgentError::io("mapping the packet ring buffer", e))?;
            spawn_collector(vec![ring], parts, stop)?
        }
    };
    // The kernel's drop counters, sampled for the slices to carry (`drops`).
    let drop_totals = Arc::new(crate::drops::DropTotals::default());
    drop_totals.update(&recorder.cpu_counters());
    let files = SliceFiles::new(&packets_dir, &config.node, config.slice_max_bytes)
        .with_drops(drop_totals.clone());
    let settings = WriterSettings {
        node_dir: node_dir.clone(),
        retention_bytes: config.retention_bytes,
        retention_age: config.retention_age,
        min_free_bytes: config.min_free_bytes,
    };
    let writer_metrics = metrics.clone();
    let writer = std::thread::Builder::new()
        .name("remora-writer".into())
        .spawn(move || run_writer(from_collector, written_tx, files, settings, writer_metrics))
        .map_err(|e| AgentError::io("starting the writer thread", e))?;

    for iface in &chosen {
        recorder.attach(iface)?;
        tracing::info!(interface = %iface.name, ifindex = iface.ifindex, "recording");
    }
    let recorder = Arc::new(Mutex::new(recorder));
    let sampler = {
        let (recorder, totals, mut stop) =
            (recorder.clone(), drop_totals.clone(), shutdown_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DROP_SAMPLING);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                let counters = recorder
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .cpu_counters();
                totals.update(&counters);
            }
        })
    };

    let api_task = listener.map(|listener| {
        let state = Arc::new(ApiState {
            node: config.node.clone(),
            node_dir,
            token,
            metrics: metrics.clone(),
            recorder: recorder.clone(),
            started: Instant::now(),
        });
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = api::serve(listener, state, extra, stopped).await {
                tracing::error!(error = %e, "node API stopped");
            }
        })
    });

    let watcher = tokio::spawn(watch_interfaces(
        config.clone(),
        recorder.clone(),
        decoder.clone(),
        wildcard_port,
        shutdown_rx.clone(),
    ));

    on_started(&Started {
        packets_dir: packets_dir.clone(),
        api: api_addr,
        token_file: config.token_file.clone(),
        interfaces: chosen.iter().map(|i| i.name.clone()).collect(),
    });

    shutdown.await;
    tracing::info!("stopping: detaching, draining the rings and publishing the open slice");
    // Detach first so no new events arrive, then let the collector drain what is in the rings.
    {
        let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
        for (ifindex, _) in rec.attached() {
            rec.detach(ifindex);
        }
        // The last reading, so the slice sealed at the end carries every drop.
        drop_totals.update(&rec.cpu_counters());
    }
    let _ = shutdown_tx.send(true);
    let _ = sampler.await;
    stop_collector.store(true, Ordering::Release);
    let _ = watcher.await;
    let _ = tokio::task::spawn_blocking(move || {
        let _ = collector.join();
        for (stop, thread) in [sockets, tls].into_iter().flatten() {
            stop.store(true, Ordering::Release);
            let _ = thread.join();
        }
        writer.join()
    })
    .await;
    if let Some(task) = api_task {
        let _ = task.await;
    }
    let dropped = {
        let rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
        crate::metrics::total(&rec.cpu_counters()).dropped_packets
    };
    Ok(RunSummary {
        rows_written: metrics.rows_written.load(Ordering::Relaxed),
        slices_written: metrics.slices_written.load(Ordering::Relaxed),
        dropped_packets: dropped,
    })
}

/// Attaches the socket tracepoints and starts the thread that writes their slices, as
/// `config.socket_events` asks; returns its stop flag and handle.
fn start_socket_events(
    config: &AgentConfig,
    recorder: &mut Recorder,
    ids: crate::sockets::record::SocketIds,
) -> Result<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> {
    if config.socket_events == HookMode::Off {
        return Ok(None);
    }
    let hooks = match recorder.attach_socket_hooks() {
        Ok(hooks) => hooks,
        Err(e) if config.socket_events == HookMode::Auto => {
            tracing::warn!(
                error = %e,
                "socket events are not recorded (calls will not name their processes); \
                 packets are. `--socket-events on` makes this an error"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let writer = spawn_event_writer(
        config,
        crate::sockets::slices::SOCKETS_KIND,
        move |dir, node, period, stop| {
            crate::sockets::run_writer(hooks, dir, node, period, ids, stop)
        },
    )?;
    tracing::info!("recording socket events (tracepoints sock:*, syscalls:*)");
    Ok(Some(writer))
}

/// Prepares `<data>/capture/<node>/<kind>/` (temp files of a killed run swept) and starts the
/// thread `remora-<kind>` running `write(dir, node, period, stop)`; returns its stop flag and
/// handle.
fn spawn_event_writer(
    config: &AgentConfig,
    kind: &str,
    write: impl FnOnce(std::path::PathBuf, String, std::time::Duration, Arc<AtomicBool>)
    + Send
    + 'static,
) -> Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let dir = config.kind_dir(kind);
    prepare_dir(&dir)?;
    store::sweep_temp_files(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let (node, period, flag) = (config.node.clone(), config.slice_duration, stop.clone());
    let thread = std::thread::Builder::new()
        .name(format!("remora-{kind}"))
        .spawn(move || write(dir, node, period, flag))
        .map_err(|e| AgentError::io(format!("starting the {kind} writer thread"), e))?;
    Ok((stop, thread))
}

/// Loads the TLS uprobes, hooks the libraries mapped now and starts the thread that writes
/// `tls` slices, as `config.tls` asks; new libraries are hooked by [`watch_interfaces`]'s loop.
fn start_tls(
    config: &AgentConfig,
    recorder: &mut Recorder,
    ids: crate::sockets::record::SocketIds,
) -> Result<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>> {
    if config.tls == HookMode::Off {
        return Ok(None);
    }
    let ring = match recorder.start_tls() {
        Ok(ring) => ring,
        Err(e) if config.tls == HookMode::Auto => {
            tracing::warn!(
                error = %e,
                "TLS plaintext is not recorded (HTTPS calls show only their handshake); packets \
                 are. `--tls on` makes this an error"
            );
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let writer = spawn_event_writer(
        config,
        crate::tls::slices::TLS_KIND,
        move |dir, node, period, stop| crate::tls::run_writer(ring, dir, node, period, ids, stop),
    )?;
    Ok(Some(writer))
}

/// `port` at every address of this namespace; none (so the port is excluded instead) when
/// there are more addresses than the BPF map holds.
fn wildcard_endpoints(port: u16) -> Vec<std::net::SocketAddr> {
    let all = interfaces::local_addresses();
    if all.len() > remora_agent_common::MAX_EXCLUDED_ENDPOINTS as usize {
        tracing::warn!(
            addresses = all.len(),
            "more local addresses than the excluded-endpoint map holds: the API's port is left out on every address"
        );
        return Vec::new();
    }
    all.into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, port))
        .collect()
}

/// How often the kernel's drop counters are read for the slices.
const DROP_SAMPLING: std::time::Duration = std::time::Duration::from_millis(200);

/// Row groups queued between the collector and the writer (about 4 MiB each at most).
const ROW_GROUPS_IN_FLIGHT: usize = 3;

fn l2_map(all: &[Interface]) -> LinkHeaders {
    all.iter().map(|i| (i.ifindex, i.l2_header_len())).collect()
}

/// Re-reads the interface list now and then: attaches to new interfaces (when recording all),
/// forgets vanished ones, and keeps the decoder's link-header table current.
async fn watch_interfaces(
    config: AgentConfig,
    recorder: Arc<Mutex<Recorder>>,
    decoder: SharedDecoder,
    wildcard_port: Option<u16>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: Vec<Interface> = Vec::new();
    let mut excluded = wildcard_port.map(wildcard_endpoints).unwrap_or_default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(config.interface_poll) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(port) = wildcard_port {
            let now = wildcard_endpoints(port);
            if now != excluded && !now.is_empty() {
                let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
                match rec.set_excluded_endpoints(&now) {
                    Ok(()) => excluded = now,
                    Err(e) => tracing::warn!(%e, "updating the API's excluded endpoints"),
                }
            }
        }
        // New processes may map TLS libraries not hooked yet.
        recorder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scan_tls();
        let Ok(all) = interfaces::list() else {
            continue;
        };
        if all == known {
            continue;
        }
        {
            let mut d = decoder.write().unwrap_or_else(|p| p.into_inner());
            let mut next = (**d).clone();
            next.l2_len = l2_map(&all);
            *d = Arc::new(next);
        }
        let mut rec = recorder.lock().unwrap_or_else(|p| p.into_inner());
        for (ifindex, name) in rec.attached() {
            if !all.iter().any(|i| i.ifindex == ifindex && i.up) {
                tracing::info!(interface = %name, "interface gone or down");
                rec.detach(ifindex);
            }
        }
        let wanted: Vec<&Interface> = if config.interfaces.is_empty() {
            all.iter().filter(|i| i.up).collect()
        } else {
            all.iter()
                .filter(|i| i.up && config.interfaces.contains(&i.name))
                .collect()
        };
        for iface in wanted {
            if rec.attached().iter().any(|(i, _)| *i == iface.ifindex) {
                continue;
            }
            match rec.attach(iface) {
                Ok(()) => tracing::info!(interface = %iface.name, "recording new interface"),
                Err(e) => tracing::warn!(interface = %iface.name, error = %e, "could not attach"),
            }
        }
        known = all;
    }
}
