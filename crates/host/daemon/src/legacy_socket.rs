//! The legacy allocation-server listener (`/tmp/tt_allocation_server.sock` by default).
//!
//! Non-blocking and driven by the collector thread's `poll()`: the listener and every
//! connection are polled with inotify and the pidfds, so messages go into the ledger on the
//! thread that owns it, without locks between parsing and applying. Each connection has its own
//! [`Framer`] (partial reads accumulate; an unframeable stream is closed with a logged reason),
//! its peer's credentials from `SO_PEERCRED`, and a bounded queue of replies written with
//! `MSG_NOSIGNAL` (a client that hung up cannot raise SIGPIPE).

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ttmem_legacy::{Detection, Framer, Message, Version};

use crate::DaemonError;
use crate::collector::{Collector, ConnectionEvent, Now, Peer};

/// How long a connection whose version is still ambiguous may pause before its bytes are
/// taken as whole messages (a single short QUERY waits this long for its answer, once).
pub const DETECT_GRACE: Duration = Duration::from_millis(20);
/// Bytes read from one connection per wake-up (bounds the time one client can hold the thread).
const READ_BUDGET: usize = 256 * 1024;
/// Unsent reply bytes a connection may accumulate before it is closed.
const MAX_BACKLOG: usize = 1 << 20;

/// The listener's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyConfig {
    /// Socket path.
    pub path: PathBuf,
    /// Socket file mode.
    pub mode: u32,
    /// Group to own the socket file (None: the daemon's).
    pub group: Option<String>,
    /// A version to use for every connection instead of detecting it.
    pub version: Option<Version>,
    /// Connections at most.
    pub max_connections: usize,
}

struct Conn {
    stream: UnixStream,
    peer: Peer,
    framer: Framer,
    out: Vec<u8>,
    last_byte: Instant,
    detected: bool,
    /// Detection already ran on a quiet stream and still needs more bytes: nothing to do
    /// until the client sends again (so a stalled client cannot make the thread spin).
    quiet_checked: bool,
    padding_reported: u64,
}

/// The listener and its connections.
pub struct Listener {
    listener: UnixListener,
    cfg: LegacyConfig,
    conns: HashMap<RawFd, Conn>,
    buf: Vec<u8>,
    msgs: Vec<Message>,
}

fn peer_of(stream: &UnixStream) -> Option<Peer> {
    let cred = nix::sys::socket::getsockopt(&stream.as_fd(), nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(Peer {
        pid: cred.pid().max(0) as u32,
        uid: cred.uid(),
    })
}

impl Listener {
    /// Binds the socket, replacing a stale file only when no server answers on it.
    pub fn bind(cfg: LegacyConfig) -> Result<Listener, DaemonError> {
        crate::claim_socket_path(&cfg.path).map_err(|e| match e {
            DaemonError::AlreadyRunning(p) => DaemonError::Io {
                context: format!(
                    "another allocation server is listening on {} (stop it, or pass --no-legacy-socket or --legacy-socket PATH)",
                    p.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
            },
            other => other,
        })?;
        let listener = UnixListener::bind(&cfg.path).map_err(|source| DaemonError::Listen {
            what: cfg.path.display().to_string(),
            source,
        })?;
        listener.set_nonblocking(true).map_err(|source| DaemonError::Io {
            context: "cannot make the legacy socket non-blocking".into(),
            source,
        })?;
        let io = |context: String| move |source| DaemonError::Io { context, source };
        std::fs::set_permissions(&cfg.path, std::fs::Permissions::from_mode(cfg.mode))
            .map_err(io(format!("cannot set the mode of {}", cfg.path.display())))?;
        if let Some(group) = &cfg.group {
            let gid = match nix::unistd::Group::from_name(group) {
                Ok(Some(g)) => g.gid,
                _ => {
                    return Err(DaemonError::Io {
                        context: format!("legacy socket group {group:?} does not exist"),
                        source: std::io::Error::from(std::io::ErrorKind::NotFound),
                    });
                }
            };
            nix::unistd::chown(&cfg.path, None, Some(gid)).map_err(|e| DaemonError::Io {
                context: format!("cannot give {} to group {group}", cfg.path.display()),
                source: e.into(),
            })?;
        }
        tracing::info!(path = %cfg.path.display(), mode = format_args!("{:o}", cfg.mode), "legacy allocation-server socket ready");
        Ok(Listener {
            listener,
            cfg,
            conns: HashMap::new(),
            buf: vec![0; 64 * 1024],
            msgs: Vec::new(),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &std::path::Path {
        &self.cfg.path
    }

    /// Descriptors to poll: the listener, then every connection.
    pub fn pollfds(&self, out: &mut Vec<libc::pollfd>) {
        out.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for (&fd, c) in &self.conns {
            let mut events = libc::POLLIN;
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            out.push(libc::pollfd { fd, events, revents: 0 });
        }
    }

    /// How soon a connection waiting for its version must be looked at again.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.conns
            .values()
            .filter(|c| !c.detected && !c.quiet_checked && c.framer.buffered() > 0)
            .map(|c| DETECT_GRACE.saturating_sub(c.last_byte.elapsed()))
            .min()
    }

    /// Accepts, reads, applies and replies for every ready descriptor in `ready` (as filled by
    /// [`Listener::pollfds`] and `poll()`), and looks again at connections whose grace ended.
    pub fn service(
        &mut self,
        ready: &[libc::pollfd],
        collector: &parking_lot::RwLock<Collector>,
        now: impl Fn() -> Now,
    ) {
        let listener_fd = self.listener.as_raw_fd();
        if ready.iter().any(|p| p.fd == listener_fd && p.revents != 0) {
            self.accept(collector);
        }
        let grace_due: Vec<RawFd> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !c.detected && !c.quiet_checked && c.framer.buffered() > 0 && c.last_byte.elapsed() >= DETECT_GRACE
            })
            .map(|(&fd, _)| fd)
            .collect();
        let mut todo: Vec<(RawFd, i16)> = ready
            .iter()
            .filter(|p| p.fd != listener_fd && p.revents != 0 && self.conns.contains_key(&p.fd))
            .map(|p| (p.fd, p.revents))
            .collect();
        for fd in grace_due {
            if !todo.iter().any(|(f, _)| *f == fd) {
                todo.push((fd, 0));
            }
        }
        for (fd, revents) in todo {
            let close = self.service_one(fd, revents, collector, &now);
            if let Some((unframeable, backlog)) = close {
                self.conns.remove(&fd);
                collector
                    .write()
                    .legacy_connection(ConnectionEvent::Closed { unframeable, backlog });
            }
        }
    }

    fn accept(&mut self, collector: &parking_lot::RwLock<Collector>) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, for example: try again at the next wake-up.
                    tracing::warn!("legacy socket: accept failed: {e}");
                    return;
                }
            };
            if self.conns.len() >= self.cfg.max_connections {
                collector.write().legacy_connection(ConnectionEvent::Refused);
                tracing::warn!(
                    limit = self.cfg.max_connections,
                    "legacy socket: connection refused, too many open"
                );
                continue; // dropping the stream closes it
            }
            let Some(peer) = peer_of(&stream) else {
                tracing::warn!("legacy socket: no peer credentials; connection closed");
                continue;
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            collector.write().legacy_connection(ConnectionEvent::Accepted);
            tracing::debug!(pid = peer.pid, uid = peer.uid, "legacy client connected");
            self.conns.insert(
                stream.as_raw_fd(),
                Conn {
                    stream,
                    peer,
                    framer: Framer::new(self.cfg.version),
                    out: Vec::new(),
                    last_byte: Instant::now(),
                    detected: false,
                    quiet_checked: false,
                    padding_reported: 0,
                },
            );
        }
    }

    /// Serves one connection; `Some((unframeable, backlog))` when it must be closed.
    fn service_one(
        &mut self,
        fd: RawFd,
        revents: i16,
        collector: &parking_lot::RwLock<Collector>,
        now: &impl Fn() -> Now,
    ) -> Option<(bool, bool)> {
        let Listener { conns, buf, msgs, .. } = self;
        let c = conns.get_mut(&fd)?;
        let mut eof = false;
        let mut read = 0;
        if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            while read < READ_BUDGET {
                match c.stream.read(buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        read += n;
                        c.last_byte = Instant::now();
                        c.quiet_checked = false;
                        if let Err(e) = c.framer.push(&buf[..n]) {
                            tracing::warn!(pid = c.peer.pid, "legacy connection closed: {e}");
                            return Some((true, false));
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
        }
        let quiet = eof || c.last_byte.elapsed() >= DETECT_GRACE;
        let version = match c.framer.detect(quiet) {
            Ok(Detection::Decided(v)) => v,
            Ok(Detection::NeedMore) => {
                c.quiet_checked = quiet;
                if eof {
                    if c.framer.buffered() > 0 {
                        tracing::debug!(
                            pid = c.peer.pid,
                            bytes = c.framer.buffered(),
                            "legacy client closed mid-message"
                        );
                    }
                    return Some((false, false));
                }
                return None;
            }
            Err(e) => {
                tracing::warn!(pid = c.peer.pid, "legacy connection closed: {e}");
                return Some((true, false));
            }
        };
        if !c.detected {
            c.detected = true;
            tracing::debug!(pid = c.peer.pid, version = %version, "legacy protocol version detected");
            collector.write().legacy_connection(ConnectionEvent::Detected(version));
        }
        msgs.clear();
        let mut framing_error = None;
        loop {
            match c.framer.next_message() {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => {
                    framing_error = Some(e);
                    break;
                }
            }
        }
        if !msgs.is_empty() || c.framer.padding_errors() != c.padding_reported {
            let mut col = collector.write();
            if !msgs.is_empty() {
                col.legacy_apply(c.peer, version, msgs, now(), &mut c.out);
            }
            let padding = c.framer.padding_errors();
            if padding != c.padding_reported {
                col.legacy_connection(ConnectionEvent::PaddingErrors(padding - c.padding_reported));
                c.padding_reported = padding;
            }
        }
        if let Some(e) = framing_error {
            tracing::warn!(pid = c.peer.pid, "legacy connection closed: {e}");
            return Some((true, false));
        }
        if !c.out.is_empty() {
            match send_nosignal(&c.stream, &c.out) {
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return Some((false, false)), // the client hung up
            }
            if c.out.len() > MAX_BACKLOG {
                tracing::warn!(
                    pid = c.peer.pid,
                    "legacy connection closed: {} reply bytes unread",
                    c.out.len()
                );
                return Some((false, true));
            }
        }
        if eof {
            return Some((false, false));
        }
        None
    }
}

/// `send()` that can never raise SIGPIPE and never blocks.
fn send_nosignal(stream: &UnixStream, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: the descriptor is open for the stream's lifetime and `bytes` is a valid buffer
    // of the given length.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
