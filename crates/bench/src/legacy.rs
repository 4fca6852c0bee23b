//! `ttmem bench legacy`: messages per second through the legacy allocation-server socket of a
//! real `ttmem serve`, next to a faithful re-implementation of the old server (one thread per
//! client, one `recv()` of the struct size per message with no framing, one global mutex, an
//! ordered map, one flushed log line per message, replies without `MSG_NOSIGNAL`), measured with
//! the same clients in the same run.
//!
//! Each client streams ALLOC/FREE pairs of P2 messages, keeps a known set of buffers live, then
//! sends a QUERY: the reply comes after every earlier message was applied, so the time to it is
//! the ingest time, and its totals are checked against what the clients left live.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use ttmem_legacy::{Message, MsgType, Version};

use crate::{BenchError, Figure, Report, Target};

/// A blocking client that speaks one protocol version, like the TT-Metal client and the old
/// monitors do.
pub struct Client {
    stream: UnixStream,
    version: Version,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `path`.
    pub fn connect(path: &Path, version: Version) -> std::io::Result<Client> {
        Ok(Client {
            stream: UnixStream::connect(path)?,
            version,
            buf: Vec::new(),
        })
    }

    /// The connection, for tests that need to shut it down or read from it.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one message with one `send()`, as the TT-Metal client does.
    pub fn send(&mut self, m: &Message) -> std::io::Result<()> {
        self.buf.clear();
        m.encode_into(self.version, &mut self.buf);
        self.stream.write_all(&self.buf)
    }

    /// Sends several messages with one `send()`.
    pub fn send_many(&mut self, ms: &[Message]) -> std::io::Result<()> {
        self.buf.clear();
        for m in ms {
            m.encode_into(self.version, &mut self.buf);
        }
        self.stream.write_all(&self.buf)
    }

    /// Sends a request and reads exactly one reply of this version's size.
    pub fn request(&mut self, m: &Message) -> std::io::Result<Message> {
        self.send(m)?;
        let mut reply = vec![0u8; self.version.size()];
        self.stream.read_exact(&mut reply)?;
        Message::decode(&reply, self.version).ok_or_else(|| std::io::Error::other("short reply"))
    }

    /// QUERY(device).
    pub fn query(&mut self, device: i32) -> std::io::Result<Message> {
        self.request(&Message::request(MsgType::Query, device))
    }

    /// DEVICE_INFO_QUERY(device); -1 asks for the device count.
    pub fn device_info(&mut self, device: i32) -> std::io::Result<Message> {
        self.request(&Message::request(MsgType::DeviceInfoQuery, device))
    }
}

/// An ALLOC as the TT-Metal client fills it.
pub fn alloc(device: i32, buffer_type: u8, id: u64, size: u64) -> Message {
    Message {
        msg_type: MsgType::Alloc as u8,
        device_id: device,
        size,
        buffer_type,
        process_id: std::process::id() as i32,
        buffer_id: id,
        // A wall clock in ns, as the client sends (the server never needs it).
        timestamp: 1_763_942_400_000_000_000,
        ..Message::default()
    }
}

/// A FREE as the old demo sends it (device 0 unless told, process id 0, no size).
pub fn free(device: i32, id: u64) -> Message {
    Message {
        msg_type: MsgType::Free as u8,
        device_id: device,
        buffer_id: id,
        ..Message::default()
    }
}

/// The old server, re-implemented as it behaved (see the module docs).
pub struct OldServer {
    path: PathBuf,
}

#[derive(Default)]
struct OldState {
    buffers: BTreeMap<(i32, u64), (u64, u8, i32, u32)>,
    stats: [[u64; 4]; 8],
}

impl OldServer {
    /// Starts it on `path` (threads live until the process ends).
    pub fn start(path: &Path) -> std::io::Result<OldServer> {
        let listener = UnixListener::bind(path)?;
        let state = Arc::new(Mutex::new(OldState::default()));
        let log = Arc::new(Mutex::new(std::fs::OpenOptions::new().write(true).open("/dev/null")?));
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let (state, log) = (state.clone(), log.clone());
                std::thread::spawn(move || old_client(s, &state, &log));
            }
        });
        Ok(OldServer { path: path.into() })
    }

    /// Its socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn old_client(mut s: UnixStream, state: &Mutex<OldState>, log: &Mutex<std::fs::File>) {
    let size = Version::P2.size();
    let mut buf = vec![0u8; size];
    loop {
        // One recv() of the struct size: a short read is processed with stale bytes.
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let _ = n;
        let Some(m) = Message::decode(&buf, Version::P2) else {
            return;
        };
        let mut st = state.lock().expect("old server state");
        let dev = (m.device_id.clamp(0, 7)) as usize;
        let ty = (m.buffer_type.min(3)) as usize;
        let line = match m.kind() {
            Some(MsgType::Alloc) => {
                let e =
                    st.buffers
                        .entry((m.device_id, m.buffer_id))
                        .or_insert((m.size, m.buffer_type, m.process_id, 0));
                e.3 += 1;
                st.stats[dev][ty] += m.size;
                format!(
                    "✓ [PID {}] Allocated {} bytes of type {} on device {} (buffer_id={})\n",
                    m.process_id, m.size, m.buffer_type, m.device_id, m.buffer_id
                )
            }
            Some(MsgType::Free) => {
                if let Some(e) = st.buffers.get_mut(&(m.device_id, m.buffer_id)) {
                    e.3 -= 1;
                    let (sz, t) = (e.0, (e.1.min(3)) as usize);
                    if e.3 == 0 {
                        st.buffers.remove(&(m.device_id, m.buffer_id));
                        st.stats[dev][t] = st.stats[dev][t].wrapping_sub(sz);
                    }
                }
                format!(
                    "✗ [PID {}] Freed buffer {} on device {}\n",
                    m.process_id, m.buffer_id, m.device_id
                )
            }
            Some(MsgType::Query) => {
                let r = Message {
                    msg_type: MsgType::Response as u8,
                    device_id: m.device_id,
                    dram_allocated: st.stats[dev][0],
                    l1_allocated: st.stats[dev][1],
                    l1_small_allocated: st.stats[dev][2],
                    trace_allocated: st.stats[dev][3],
                    ..Message::default()
                };
                // send() without MSG_NOSIGNAL, as the old server did.
                let bytes = r.encode(Version::P2);
                // SAFETY: a valid descriptor and buffer of the given length.
                unsafe { libc::send(s.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
                String::new()
            }
            _ => String::new(),
        };
        drop(st);
        if !line.is_empty() {
            // std::cout << ... << std::endl: a write and a flush per message.
            let mut l = log.lock().expect("old server log");
            let _ = l.write_all(line.as_bytes());
            let _ = l.flush();
        }
    }
}

/// A server that reads and discards every byte and answers each QUERY with zeros: the client's
/// own ceiling (what any server can be measured at with this client on this machine).
struct Sink;

impl Sink {
    fn start(path: &Path) -> std::io::Result<()> {
        let listener = UnixListener::bind(path)?;
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                std::thread::spawn(move || sink_client(s));
            }
        });
        Ok(())
    }
}

fn sink_client(mut s: UnixStream) {
    let size = Version::P2.size();
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / size * size;
        for m in pending[..whole].chunks_exact(size) {
            if m[0] == MsgType::Query as u8 {
                let mut r = Message::request(MsgType::Response, 0);
                r.dram_allocated = u64::MAX; // never a right answer: the sink is not checked
                let _ = s.write_all(&r.encode(Version::P2));
            }
        }
        pending.drain(..whole);
    }
}

/// How much to measure.
#[derive(Copy, Clone, Debug)]
pub struct LegacyOptions {
    /// ALLOC/FREE pairs per client per sample.
    pub pairs: u64,
    /// Samples per figure.
    pub samples: usize,
}

impl Default for LegacyOptions {
    fn default() -> Self {
        LegacyOptions {
            pairs: 100_000,
            samples: 5,
        }
    }
}

/// Buffers each client leaves live for the final QUERY to find.
const KEEP: u64 = 64;
const KEEP_SIZE: u64 = 4096;

/// One sample: `clients` clients stream `pairs` pairs each (batched `per_send` messages per
/// `send()`), keep [`KEEP`] buffers, and QUERY. Returns messages per second over all clients.
fn run_sample(
    path: &Path,
    clients: usize,
    pairs: u64,
    per_send: usize,
    round: u64,
    check: bool,
) -> Result<f64, BenchError> {
    let barrier = Arc::new(Barrier::new(clients + 1));
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (path, barrier) = (path.to_path_buf(), barrier.clone());
            std::thread::spawn(move || -> std::io::Result<(Client, Instant)> {
                let mut cl = Client::connect(&path, Version::P2)?;
                let base = (round << 40) | ((c as u64) << 32);
                let mut batch = Vec::with_capacity(per_send);
                barrier.wait();
                for i in 0..pairs {
                    let id = base | (i & 0xffff) << 6;
                    for m in [alloc(0, 1, id, 2048), free(0, id)] {
                        batch.push(m);
                        if batch.len() == per_send {
                            if per_send == 1 {
                                cl.send(&batch[0])?;
                            } else {
                                cl.send_many(&batch)?;
                            }
                            batch.clear();
                        }
                    }
                }
                cl.send_many(&batch)?;
                for k in 0..KEEP {
                    cl.send(&alloc(0, 0, base | 0x8000_0000 | k << 6, KEEP_SIZE))?;
                }
                // The reply comes after everything this client sent was applied.
                let _ = cl.query(0)?;
                Ok((cl, Instant::now()))
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut done = Vec::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| BenchError::Setup("client thread panicked".into()))?;
        done.push(r.map_err(|e| BenchError::Setup(format!("legacy client: {e}")))?);
    }
    let end = done.iter().map(|(_, t)| *t).max().unwrap_or(start);
    // Every client's kept buffers, and nothing else, must be in the totals.
    let (cl, _) = done.first_mut().ok_or_else(|| BenchError::Setup("no clients".into()))?;
    let q = cl.query(0).map_err(|e| BenchError::Setup(format!("query: {e}")))?;
    let want = clients as u64 * KEEP * KEEP_SIZE;
    if check && (q.dram_allocated != want || q.l1_allocated != 0) {
        return Err(BenchError::Setup(format!(
            "totals wrong after the run: DRAM {} (want {want}), L1 {} (want 0)",
            q.dram_allocated, q.l1_allocated
        )));
    }
    for (c, (cl, _)) in done.iter_mut().enumerate() {
        let base = (round << 40) | ((c as u64) << 32);
        let frees: Vec<Message> = (0..KEEP).map(|k| free(0, base | 0x8000_0000 | k << 6)).collect();
        cl.send_many(&frees)
            .map_err(|e| BenchError::Setup(format!("free: {e}")))?;
        let _ = cl.query(0);
    }
    let messages = clients as u64 * (2 * pairs + KEEP + 1);
    Ok(messages as f64 / end.duration_since(start).as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn wait_connectable(path: &Path, child: &mut Child) -> Result<(), BenchError> {
    let start = Instant::now();
    while UnixStream::connect(path).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(BenchError::Setup(format!("ttmem serve exited: {status}")));
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err(BenchError::Setup(format!("{} never answered", path.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Runs the bench: `ttmem` is the binary to start as the daemon.
pub fn legacy(ttmem: &Path, opts: LegacyOptions, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let dir = crate::tempdir()?;
    let sock = dir.path().join("legacy.sock");
    progress("starting ttmem serve");
    let mut child = Command::new(ttmem)
        .arg("serve")
        .args(["--no-http", "--region-dir"])
        .arg(dir.path().join("regions"))
        .arg("--api-socket")
        .arg(dir.path().join("api.sock"))
        .arg("--db")
        .arg(dir.path().join("db"))
        .arg("--legacy-socket")
        .arg(&sock)
        .env_remove("TTMEM_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot start {}: {e}", ttmem.display())))?;
    wait_connectable(&sock, &mut child)?;
    let _daemon = KillOnDrop(child);
    let old = OldServer::start(&dir.path().join("old.sock")).map_err(|e| BenchError::Setup(e.to_string()))?;
    let sink = dir.path().join("sink.sock");
    Sink::start(&sink).map_err(|e| BenchError::Setup(e.to_string()))?;

    let mut figures = Vec::new();
    let mut rates = BTreeMap::new();
    let cases: [(&str, &str, &Path, usize, usize); 8] = [
        (
            "sink-p2-1client",
            "a reader that discards (the client's ceiling), one send() per message",
            &sink,
            1,
            1,
        ),
        (
            "ttmem-p2-1client",
            "ttmem serve, 1 P2 client, one send() per message",
            &sock,
            1,
            1,
        ),
        (
            "old-p2-1client",
            "old server, 1 P2 client, one send() per message",
            old.path(),
            1,
            1,
        ),
        (
            "ttmem-p2-8clients",
            "ttmem serve, 8 P2 clients at once, one send() per message",
            &sock,
            8,
            1,
        ),
        (
            "old-p2-8clients",
            "old server, 8 P2 clients at once, one send() per message",
            old.path(),
            8,
            1,
        ),
        (
            "sink-p2-1client-batched",
            "a reader that discards, 64 messages per send()",
            &sink,
            1,
            64,
        ),
        (
            "ttmem-p2-1client-batched",
            "ttmem serve, 1 P2 client writing 64 messages per send()",
            &sock,
            1,
            64,
        ),
        (
            "old-p2-1client-batched",
            "old server, 1 P2 client writing 64 messages per send()",
            old.path(),
            1,
            64,
        ),
    ];
    let mut round = 0;
    for (name, description, path, clients, per_send) in cases {
        progress(name);
        // A warm-up sample, then the measured ones.
        round += 1;
        let check = !name.starts_with("sink");
        run_sample(path, clients, opts.pairs / 10 + 1, per_send, round, check)?;
        let mut v = Vec::new();
        for _ in 0..opts.samples.max(1) {
            round += 1;
            v.push(run_sample(path, clients, opts.pairs, per_send, round, check)?);
        }
        let rate = median(v.clone());
        let worst = v.iter().copied().fold(f64::INFINITY, f64::min);
        rates.insert(name, rate);
        figures.push(Figure {
            name: name.into(),
            description: format!("{description}: ns per message (median; messages/s = 1e9 / this)"),
            median_ns: 1e9 / rate,
            p99_ns: 1e9 / worst,
            threads: clients as u32,
            samples: v.len(),
        });
    }
    let ratio = |a: &str, b: &str| rates[a] / rates[b];
    let ratios = vec![
        (
            "1 client: ttmem / old server (messages/s)".into(),
            ratio("ttmem-p2-1client", "old-p2-1client"),
        ),
        (
            "8 clients: ttmem / old server (messages/s)".into(),
            ratio("ttmem-p2-8clients", "old-p2-8clients"),
        ),
        (
            "1 batched client: ttmem / old server (messages/s)".into(),
            ratio("ttmem-p2-1client-batched", "old-p2-1client-batched"),
        ),
        (
            "1 client: ttmem / discarding reader (1.0 = the client is the limit)".into(),
            ratio("ttmem-p2-1client", "sink-p2-1client"),
        ),
    ];
    let targets = vec![
        Target::new(
            "P2 messages/s from one client (batched writes: the daemon's ingest)",
            rates["ttmem-p2-1client-batched"],
            ">=",
            1e6,
        ),
        Target::new(
            "ttmem / old server, one client, same run",
            ratio("ttmem-p2-1client", "old-p2-1client"),
            ">=",
            10.0,
        ),
    ];
    Ok(Report {
        bench: "legacy".into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        figures,
        ratios,
        targets,
    })
}
