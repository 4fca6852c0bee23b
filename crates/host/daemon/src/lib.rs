//! `ttmem serve`: the host daemon.
//!
//! - [`collector`]: discovers regions, drains them into the ledger, follows process lifecycles
//!   (pidfd), records what dead processes left behind. Synchronous; runs on its own thread,
//!   woken by inotify (new regions and TT-Metal counter files), pidfds (deaths) or the drain
//!   interval.
//! - [`api`]: the HTTP/JSON API, the same over the Unix socket and TCP (loopback by default).
//! - [`legacy_socket`]: the legacy allocation-server socket (P1–P4), polled by the collector
//!   thread, feeding the same ledger.
//! - [`config`]: defaults, TOML file, environment, flags.

#![deny(missing_docs)]

pub mod alerting;
pub mod api;
pub mod collector;
pub mod config;
pub mod http_server;
pub mod legacy_socket;
pub mod outbound;

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use config::Config;

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon answers on the API socket.
    #[error("another ttmem daemon is already serving on {0} (stop it, or pass --api-socket)")]
    AlreadyRunning(PathBuf),
    /// A listener could not be created.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The socket path or address.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// This host's name, as TT's telemetry exporter labels it (metrics, alerts).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock events are stamped with).
pub fn monotonic_ns() -> u64 {
    ttmem_scan::attach::monotonic_ns()
}

/// Removes a socket file left by a daemon that is gone; refuses if one still answers.
fn claim_socket_path(path: &Path) -> Result<(), DaemonError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Never delete anything but a socket: a mistyped --api-socket must not cost a file.
        if !meta.file_type().is_socket() {
            return Err(DaemonError::Io {
                context: format!("{} exists and is not a socket", path.display()),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning(path.into()));
        }
        std::fs::remove_file(path).map_err(|source| DaemonError::Io {
            context: format!("cannot remove stale socket {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

/// Raises the soft limit of open files to the hard limit: every idle API connection, region
/// file and pidfd holds a descriptor, and the default soft limit (1024) lets a thousand idle
/// connections starve the daemon. Returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Runs the daemon until SIGTERM or SIGINT. Blocks.
pub fn serve(config: Config) -> Result<(), DaemonError> {
    let open_files = raise_open_file_limit();
    tracing::debug!(open_files, "open-file limit");
    ensure_region_dir(&config.region_dir)?;
    claim_socket_path(&config.api_socket)?;
    let tcp_access = api::TcpAccess {
        token: match &config.api_token_file {
            Some(path) => Some(read_token(path)?),
            None => None,
        },
        open: config.api_tcp_detail,
    };
    let mut shared = api::Shared::new(
        collector::Collector::new(
            collector::CollectorConfig {
                region_dir: config.region_dir.clone(),
                retention: config.retention,
                remove_dead_regions: config.remove_dead_regions,
                tt_metal_dir: config.tt_metal_dir.clone(),
                proc_root: config.proc_root.clone(),
                drain_interval: config.drain_interval,
                max_regions_per_user: config.max_regions_per_user,
                max_exited: config.max_exited_processes,
                max_exited_allocations: config.max_exited_allocations,
                flight_recorder_events: config.flight_recorder_events,
                alert_rules: config.alerts.rules.clone(),
                alert_interval_s: config.alerts.interval.as_secs(),
            },
            monotonic_ns(),
        ),
        tcp_access,
    );
    if let Some(h) = &config.hostname {
        shared.hostname = h.clone();
    }
    if !config.peers.is_empty() {
        shared.peers = Some(Arc::new(api::peer_hub::PeerHub::new(config.peers.clone())));
    }
    shared.notifiers = alerting::Notifiers::start(&config.alerts.notify, &shared.hostname);
    let shared = Arc::new(shared);
    open_store(&shared, &config);
    let legacy = match &config.legacy_socket {
        Some(path) => {
            let l = legacy_socket::Listener::bind(legacy_socket::LegacyConfig {
                path: path.clone(),
                mode: config.legacy_socket_mode,
                group: config.legacy_socket_group.clone(),
                version: config.legacy_version,
                max_connections: config.legacy_max_connections,
            })?;
            shared.collector.write().set_legacy_source(path.clone());
            Some(l)
        }
        None => None,
    };
    // A first tick before answering, so the first query already sees every region.
    shared.collector.write().tick(collector::Now::system());
    // Alerts still firing from before a restart go to Alertmanager again (it would otherwise
    // let them lapse).
    let firing = shared.collector.read().alerts().firing();
    shared.notifiers.notify(&[], &firing);

    let stop = Arc::new(AtomicBool::new(false));
    let collector_thread = {
        let (shared, stop, config) = (shared.clone(), stop.clone(), config.clone());
        std::thread::Builder::new()
            .name("ttmem-collector".into())
            .spawn(move || collect_loop(&shared, &stop, &config, legacy))
            .map_err(|source| DaemonError::Io {
                context: "cannot start the collector thread".into(),
                source,
            })?
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| DaemonError::Io {
            context: "cannot start the async runtime".into(),
            source,
        })?;
    let result = runtime.block_on(async {
        let unix = tokio::net::UnixListener::bind(&config.api_socket)
            .map_err(|source| DaemonError::Listen { what: config.api_socket.display().to_string(), source })?;
        let _ = std::fs::set_permissions(&config.api_socket, std::fs::Permissions::from_mode(config.api_socket_mode));
        let tcp = match config.http {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|source| DaemonError::Listen { what: addr.to_string(), source })?),
            None => None,
        };
        tracing::info!(socket = %config.api_socket.display(), http = ?config.http, regions = %config.region_dir.display(), "ttmem serve ready");
        notify_systemd("READY=1\nSTATUS=serving");
        if let Some(hub) = &shared.peers {
            hub.start();
        }
        let router = api::router(shared.clone());
        let limits = http_server::Limits {
            max_connections: config.api_max_connections,
            max_per_user: config.api_max_connections_per_user,
            header_timeout: config.api_header_timeout,
        };
        let (tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut rx_unix = tx.subscribe();
        let mut rx_tcp = tx.subscribe();
        let unix_server = http_server::serve(
            || async {
                let (stream, _) = unix.accept().await?;
                // The peer's uid, from the kernel: the per-user cap counts by it.
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                Ok((stream, uid))
            },
            router.clone(),
            limits,
            async move {
                let _ = rx_unix.recv().await;
            },
        );
        let tcp_server = async move {
            if let Some(l) = tcp {
                http_server::serve(
                    || async { l.accept().await.map(|(stream, _)| (stream, None)) },
                    router,
                    limits,
                    async move {
                        let _ = rx_tcp.recv().await;
                    },
                )
                .await;
            }
        };
        let signals = async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
            let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).expect("SIGINT handler");
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
            notify_systemd("STOPPING=1");
            let _ = tx.send(());
        };
        tokio::join!(unix_server, tcp_server, signals);
        Ok(())
    });
    stop.store(true, Ordering::Relaxed);
    let _ = collector_thread.join();
    let _ = std::fs::remove_file(&config.api_socket);
    if let Some(p) = &config.legacy_socket {
        let _ = std::fs::remove_file(p);
    }
    result
}

/// Tells systemd how the service stands (`Type=notify`), when it started the daemon: a datagram
/// to `$NOTIFY_SOCKET`, a path or an abstract name (`@…`). Without systemd, nothing happens.
pub fn notify_systemd(state: &str) {
    use std::os::unix::ffi::OsStrExt;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent =
        std::os::unix::net::UnixDatagram::unbound().and_then(|sock| match target.as_bytes().strip_prefix(b"@") {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), &target),
        });
    if let Err(e) = sent {
        tracing::warn!(
            "cannot tell systemd {state:?} through {}: {e}",
            target.to_string_lossy()
        );
    }
}

/// Reads the API token: the file's first line, which must not be empty, in a file no other
/// user may read (a token others can read grants them everything).
fn read_token(path: &Path) -> Result<String, DaemonError> {
    let io = |source| DaemonError::Io {
        context: format!("cannot read the API token file {}", path.display()),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "it may be read by other users (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            ),
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidData, "it is empty")));
    }
    Ok(token)
}

fn ensure_region_dir(dir: &Path) -> Result<(), DaemonError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::Io {
            context: format!("cannot create region directory {}", dir.display()),
            source,
        })?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    Ok(())
}

/// Opens the database and loads the history it holds. A failure is logged and reported by
/// `/api/v1/health`; the daemon runs on without persistence.
fn open_store(shared: &api::Shared, config: &Config) {
    match ttmem_store::Store::open(&config.db) {
        Ok(store) => {
            let now = ttmem_model::now_ns() / 1_000_000_000;
            let since = ttmem_history::TIERS.map(|t| now.saturating_sub(t.memory_s));
            match store.load_history(since) {
                Ok(series) => {
                    let mut c = shared.collector.write();
                    for (key, tier, points) in &series {
                        c.history_mut().load(key, *tier, points);
                    }
                    tracing::info!(db = %config.db.display(), series = series.len(), "loaded history");
                }
                Err(e) => tracing::warn!("cannot load history: {e}"),
            }
            let states = [
                ttmem_model::api::AlertState::Pending,
                ttmem_model::api::AlertState::Firing,
            ];
            match store.alerts(&states, 100_000) {
                Ok(alerts) => shared
                    .collector
                    .write()
                    .alerts_mut()
                    .restore(alerts, ttmem_model::now_ns()),
                Err(e) => tracing::warn!("cannot load alerts: {e}"),
            }
            *shared.store.lock() = Some(store);
        }
        Err(e) => {
            tracing::error!("{e}; running without history persistence");
            *shared.store_error.lock() = Some(e.to_string());
        }
    }
}

/// Process records and alert transitions waiting for the next flush.
#[derive(Default)]
struct Pending {
    records: Vec<ttmem_store::ProcessRecord>,
    alerts: Vec<ttmem_model::api::Alert>,
}

/// Most pending history points kept for a retry while the database refuses writes.
const MAX_UNFLUSHED: usize = 1 << 20;

/// Writes pending history and process records. Points a failed write could not store are
/// kept (up to [`MAX_UNFLUSHED`]) and retried at the next flush.
fn flush(shared: &api::Shared, unflushed: &mut Vec<ttmem_history::Pending>, pending: &mut Pending) {
    {
        let mut c = shared.collector.write();
        unflushed.extend(c.history_mut().take_pending());
        pending.records.extend(c.take_records());
    }
    let records = &mut pending.records;
    let mut guard = shared.store.lock();
    let Some(store) = guard.as_mut() else {
        unflushed.clear();
        records.clear();
        pending.alerts.clear();
        return;
    };
    let mut error = None;
    match store.write_samples(unflushed) {
        Ok(_) => unflushed.clear(),
        Err(e) => error = Some(e.to_string()),
    }
    records.retain(|r| match store.record_process(r) {
        Ok(()) => false,
        Err(e) => {
            error = Some(e.to_string());
            true
        }
    });
    match store.record_alerts(&pending.alerts) {
        Ok(()) => pending.alerts.clear(),
        Err(e) => error = Some(e.to_string()),
    }
    if pending.alerts.len() > MAX_UNFLUSHED {
        let drop = pending.alerts.len() - MAX_UNFLUSHED;
        pending.alerts.drain(..drop);
    }
    if unflushed.len() > MAX_UNFLUSHED {
        let drop = unflushed.len() - MAX_UNFLUSHED;
        unflushed.drain(..drop);
    }
    if let Some(e) = &error {
        tracing::warn!("database write failed (will retry): {e}");
    }
    *shared.store_error.lock() = error;
}

/// Drains the regions that are due, taking the collector's lock for one region at a time: API
/// readers get in between, whatever one region costs.
fn drain_due(shared: &api::Shared) {
    let now = monotonic_ns();
    let due = shared.collector.read().due_regions(now);
    for key in due {
        shared.collector.write().drain_region(key, now);
    }
}

/// The collector thread: sleeps in poll() on inotify, the processes' pidfds and the legacy
/// socket's descriptors. It ticks (discover, drain, liveness) when inotify or a pidfd wakes it
/// or the drain interval passes, and serves legacy clients whenever their bytes arrive.
fn collect_loop(shared: &api::Shared, stop: &AtomicBool, config: &Config, mut legacy: Option<legacy_socket::Listener>) {
    let mut inotify = inotify::Inotify::init().ok();
    if let Some(i) = inotify.as_mut() {
        let mask = inotify::WatchMask::CREATE | inotify::WatchMask::MOVED_TO | inotify::WatchMask::DELETE;
        if let Err(e) = i.watches().add(&config.region_dir, mask) {
            tracing::warn!("inotify unavailable ({e}); discovering regions by rescan only");
            inotify = None;
        } else if let Some(dir) = &config.tt_metal_dir
            && let Err(e) = i.watches().add(dir, mask)
        {
            // New counter files are still found by the rescan (every 250 ms).
            tracing::debug!(dir = %dir.display(), "cannot watch TT-Metal's counter files: {e}");
        }
    }
    let mut buf = [0u8; 4096];
    let timeout_ms = config.drain_interval.as_millis().clamp(1, 1000) as i32;
    let (mut unflushed, mut pending) = (Vec::new(), Pending::default());
    let mut last_flush = Instant::now();
    let mut last_prune = Instant::now();
    let mut last_tick = Instant::now();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        fds.clear();
        if let Some(i) = &inotify {
            fds.push(libc::pollfd {
                fd: i.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let next_drain_ns = {
            let c = shared.collector.read();
            fds.extend(c.pidfds().into_iter().map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            }));
            c.next_drain_ns()
        };
        let tick_fds = fds.len();
        if let Some(l) = &legacy {
            l.pollfds(&mut fds);
        }
        let tick_every = std::time::Duration::from_millis(timeout_ms as u64);
        let until_tick = tick_every.saturating_sub(last_tick.elapsed());
        // A busy region is drained at its own pace, sooner than the tick (see DrainPace).
        let until_drain = next_drain_ns.map(|t| std::time::Duration::from_nanos(t.saturating_sub(monotonic_ns())));
        let wait = [
            Some(until_tick),
            until_drain,
            legacy.as_ref().and_then(|l| l.next_deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(tick_every);
        let timeout = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: fds is a valid array of pollfd of the given length; the timespec outlives the
        // call and no signal mask is passed.
        unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &timeout, std::ptr::null()) };
        if let Some(l) = legacy.as_mut() {
            l.service(&fds[tick_fds..], &shared.collector, collector::Now::system);
        }
        let woken = fds[..tick_fds].iter().any(|p| p.revents != 0);
        if !woken && last_tick.elapsed() < tick_every {
            if next_drain_ns.is_some_and(|t| t <= monotonic_ns()) {
                drain_due(shared);
            }
            continue;
        }
        last_tick = Instant::now();
        let mut changed = inotify.is_none();
        if let Some(i) = inotify.as_mut() {
            // Empty the queue; what changed does not matter, the tick rescans.
            while let Ok(mut events) = i.read_events(&mut buf) {
                if events.next().is_none() {
                    break;
                }
                changed = true;
            }
        }
        {
            let mut c = shared.collector.write();
            if changed {
                c.request_rescan();
            }
            c.tick_start(collector::Now::system());
        }
        drain_due(shared);
        let (changes, firing) = {
            let mut c = shared.collector.write();
            c.tick_finish(collector::Now::system());
            let changes = c.alerts_mut().take_changes();
            let firing = if changes.is_empty() {
                Vec::new()
            } else {
                c.alerts().firing()
            };
            (changes, firing)
        };
        if !changes.is_empty() {
            for a in &changes {
                tracing::info!(rule = %a.rule, state = a.state.as_str(), "alert: {}", a.summary);
            }
            shared.notifiers.notify(&changes, &firing);
            pending.alerts.extend(changes);
        }
        if last_flush.elapsed() >= config.flush_interval {
            last_flush = Instant::now();
            flush(shared, &mut unflushed, &mut pending);
        }
        if last_prune.elapsed() >= std::time::Duration::from_secs(3600) {
            last_prune = Instant::now();
            let now = ttmem_model::now_ns();
            if let Some(store) = shared.store.lock().as_mut()
                && let Err(e) = store.prune(
                    now / 1_000_000_000,
                    now.saturating_sub(config.retention.as_nanos() as u64),
                )
            {
                tracing::warn!("database prune failed: {e}");
            }
        }
    }
    // Shutting down: whatever is pending goes to disk.
    flush(shared, &mut unflushed, &mut pending);
}
