//! `ttmem serve` configuration: defaults, then a TOML file, then `TTMEM_*` environment
//! variables, then flags, merged here and nowhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The config file to read when none is named: `/etc/ttmem/ttmem.toml` for root,
/// `$XDG_CONFIG_HOME/ttmem/ttmem.toml` (else `~/.config/ttmem/ttmem.toml`) otherwise; used only
/// if it exists.
pub const ENV_CONFIG: &str = "TTMEM_CONFIG";
/// The API socket path.
pub const ENV_API_SOCKET: &str = "TTMEM_API_SOCKET";
/// `ADDR:PORT` for the TCP API, or `off`.
pub const ENV_HTTP: &str = "TTMEM_HTTP";
/// The SQLite database path.
pub const ENV_DB: &str = "TTMEM_DB";
/// The region directory (shared with the client library).
pub const ENV_DIR: &str = "TTMEM_DIR";
/// Seconds exited processes stay queryable.
pub const ENV_RETENTION_S: &str = "TTMEM_RETENTION_S";
/// The legacy allocation-server socket path, or `off`.
pub const ENV_LEGACY_SOCKET: &str = "TTMEM_LEGACY_SOCKET";
/// Where TT-Metal writes its counter files, or `off`.
pub const ENV_TT_METAL_DIR: &str = "TTMEM_TT_METAL_DIR";
/// The proc root (the kernel driver's pid lists, process facts).
pub const ENV_PROC_ROOT: &str = "TTMEM_PROC_ROOT";

/// Where existing TT-Metal builds look for the allocation server.
pub const DEFAULT_LEGACY_SOCKET: &str = "/tmp/tt_allocation_server.sock";
/// Default connection limit of the legacy socket.
pub const DEFAULT_LEGACY_MAX_CONNECTIONS: usize = 256;

/// Default cap on the API's connections at once, per listener.
pub const DEFAULT_API_MAX_CONNECTIONS: usize = 512;
/// Default cap on one user's connections to the API's Unix socket at once.
pub const DEFAULT_API_MAX_CONNECTIONS_PER_USER: usize = 64;
/// Default time a client has to send a request's headers, and the longest an idle kept-alive
/// connection stays open.
pub const DEFAULT_API_HEADER_TIMEOUT_S: u64 = 10;

/// Default cap on the regions followed at once per user other than root: more than any user
/// runs processes that report, few enough that a user forging regions for thousands of its own
/// idle processes cannot make the daemon read thousands of files.
pub const DEFAULT_MAX_REGIONS_PER_USER: usize = 256;

/// Default cap on exited processes kept with what they left behind: a day of churn at one
/// process a minute, while a burst of short processes cannot grow the daemon without bound.
pub const DEFAULT_MAX_EXITED_PROCESSES: usize = 2048;

/// Default cap on the allocations exited processes left behind, in all: some 64 MiB of ledger.
pub const DEFAULT_MAX_EXITED_ALLOCATIONS: u64 = 1 << 20;

/// Default length of each process's flight recorder: the events an export holds. About 48
/// bytes each, so some 48 KiB for a busy process.
pub const DEFAULT_FLIGHT_RECORDER_EVENTS: usize = 1024;

/// Default TCP address of the API: loopback only.
pub const DEFAULT_HTTP: &str = "127.0.0.1:9477";
/// Default drain interval.
pub const DEFAULT_DRAIN_MS: u64 = 50;
/// Default interval of database flushes, in seconds.
pub const DEFAULT_FLUSH_S: u64 = 10;
/// Default retention of exited processes.
pub const DEFAULT_RETENTION_S: u64 = 24 * 3600;

/// The daemon's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where regions are.
    pub region_dir: PathBuf,
    /// The API's Unix socket.
    pub api_socket: PathBuf,
    /// Its mode (default 0666: the API is read-only, like `nvidia-smi` for everyone).
    pub api_socket_mode: u32,
    /// The TCP API address (None: off).
    pub http: Option<SocketAddr>,
    /// The SQLite database.
    pub db: PathBuf,
    /// How long exited processes stay queryable.
    pub retention: Duration,
    /// How often rings are drained.
    pub drain_interval: Duration,
    /// Remove a dead process's region once its record is kept.
    pub remove_dead_regions: bool,
    /// How often history and process records are written to the database.
    pub flush_interval: Duration,
    /// The legacy allocation-server socket (None: off).
    pub legacy_socket: Option<PathBuf>,
    /// Its mode (default 0660: only the daemon's user and group may report or query).
    pub legacy_socket_mode: u32,
    /// The group to own it (None: the daemon's group).
    pub legacy_socket_group: Option<String>,
    /// A protocol version for every connection instead of detection.
    pub legacy_version: Option<ttmem_legacy::Version>,
    /// Connections the legacy socket accepts at once.
    pub legacy_max_connections: usize,
    /// Where TT-Metal writes its per-chip counter files (None: not read).
    pub tt_metal_dir: Option<PathBuf>,
    /// The proc root: the kernel driver's pid lists and the facts about their processes.
    pub proc_root: PathBuf,
    /// The API's connections at once, per listener (the Unix socket's owner and root always
    /// get theirs: see `docs/api.md`).
    pub api_max_connections: usize,
    /// One user's connections to the API's Unix socket at once.
    pub api_max_connections_per_user: usize,
    /// How long a client has to send a request's headers; also the longest an idle kept-alive
    /// connection stays open.
    pub api_header_timeout: Duration,
    /// Regions followed at once per user other than root.
    pub max_regions_per_user: usize,
    /// Exited processes kept at most, with what they left behind (the oldest go first; their
    /// records stay in the database).
    pub max_exited_processes: usize,
    /// Allocations that exited processes left behind, kept at most in all (the oldest processes
    /// go first): about 64 bytes each.
    pub max_exited_allocations: u64,
    /// Events kept per process for its flight recorder and exports (about 48 bytes each).
    pub flight_recorder_events: usize,
    /// A file holding the API token: a TCP request that presents it (`Authorization: Bearer`)
    /// sees everything (None: TCP shows only what every user sees).
    pub api_token_file: Option<PathBuf>,
    /// Every TCP request sees everything, without a token (a host whose loopback is trusted).
    pub api_tcp_detail: bool,
    /// Alert rules, how often they are evaluated, and where transitions go.
    pub alerts: crate::alerting::AlertsConfig,
    /// The host's name in metrics and alerts (None: the kernel's hostname).
    pub hostname: Option<String>,
    /// Other hosts' daemons the dashboard shows beside this one.
    pub peers: Vec<crate::api::peers::PeerHost>,
}

/// The keys a config file may hold (all optional; unknown keys are an error).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Config::region_dir`].
    pub region_dir: Option<PathBuf>,
    /// See [`Config::api_socket`].
    pub api_socket: Option<PathBuf>,
    /// Octal text, e.g. `"660"`.
    pub api_socket_mode: Option<String>,
    /// `ADDR:PORT` or `"off"`.
    pub http: Option<String>,
    /// See [`Config::db`].
    pub db: Option<PathBuf>,
    /// Seconds.
    pub retention_s: Option<u64>,
    /// Milliseconds.
    pub drain_interval_ms: Option<u64>,
    /// See [`Config::remove_dead_regions`].
    pub remove_dead_regions: Option<bool>,
    /// Seconds between database flushes.
    pub flush_interval_s: Option<u64>,
    /// Path or `"off"`.
    pub legacy_socket: Option<String>,
    /// Octal text, e.g. `"660"`.
    pub legacy_socket_mode: Option<String>,
    /// Group name.
    pub legacy_socket_group: Option<String>,
    /// `P1`, `P2`, `P3` or `P4` to pin every connection's version.
    pub legacy_version: Option<String>,
    /// See [`Config::legacy_max_connections`].
    pub legacy_max_connections: Option<usize>,
    /// Path or `"off"`.
    pub tt_metal_dir: Option<String>,
    /// See [`Config::proc_root`].
    pub proc_root: Option<PathBuf>,
    /// See [`Config::api_max_connections`].
    pub api_max_connections: Option<usize>,
    /// See [`Config::api_max_connections_per_user`].
    pub api_max_connections_per_user: Option<usize>,
    /// Seconds; see [`Config::api_header_timeout`].
    pub api_header_timeout_s: Option<u64>,
    /// See [`Config::max_regions_per_user`].
    pub max_regions_per_user: Option<usize>,
    /// See [`Config::max_exited_processes`].
    pub max_exited_processes: Option<usize>,
    /// See [`Config::max_exited_allocations`].
    pub max_exited_allocations: Option<u64>,
    /// See [`Config::flight_recorder_events`].
    pub flight_recorder_events: Option<usize>,
    /// See [`Config::api_token_file`] (empty: none).
    pub api_token_file: Option<PathBuf>,
    /// See [`Config::api_tcp_detail`].
    pub api_tcp_detail: Option<bool>,
    /// The `[alerts]` section.
    pub alerts: Option<crate::alerting::AlertsSection>,
    /// See [`Config::hostname`].
    pub hostname: Option<String>,
    /// The `[[peers]]` tables.
    pub peers: Option<Vec<crate::api::peers::PeerSection>>,
}

/// Values given as flags (None: not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// The global `--dir`.
    pub region_dir: Option<PathBuf>,
    /// `--api-socket`.
    pub api_socket: Option<PathBuf>,
    /// `--http`.
    pub http: Option<String>,
    /// `--no-http`.
    pub no_http: bool,
    /// `--db`.
    pub db: Option<PathBuf>,
    /// `--legacy-socket`.
    pub legacy_socket: Option<PathBuf>,
    /// `--no-legacy-socket`.
    pub no_legacy_socket: bool,
    /// `--legacy-version`.
    pub legacy_version: Option<String>,
    /// The global `--tt-metal-dir`.
    pub tt_metal_dir: Option<PathBuf>,
    /// `--no-tt-metal`.
    pub no_tt_metal: bool,
    /// The global `--proc-root`.
    pub proc_root: Option<PathBuf>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong, with its place.
        message: String,
    },
    /// The `[alerts]` section is unusable as a whole.
    #[error("invalid [alerts] section: {0}")]
    Alerts(String),
    /// A `[[peers]]` table is unusable.
    #[error("invalid [[peers]]: {0}")]
    Peers(String),
    /// A value is malformed.
    #[error("invalid {what} {value:?}: {why}")]
    Value {
        /// Which setting.
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        why: String,
    },
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into())
}

impl Config {
    /// Defaults for this user: system paths for root, per-user paths otherwise.
    pub fn defaults(get: &dyn Fn(&str) -> Option<String>) -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        let api_socket = ttmem_model::default_api_socket(unsafe { libc::getuid() }, get);
        let db = if is_root() {
            PathBuf::from("/var/lib/ttmem/ttmem.db")
        } else {
            get("XDG_STATE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home().join(".local/state"))
                .join("ttmem/ttmem.db")
        };
        Config {
            region_dir: ttmem_region::default_dir(),
            api_socket,
            api_socket_mode: 0o666,
            http: Some(DEFAULT_HTTP.parse().expect("valid default address")),
            db,
            retention: Duration::from_secs(DEFAULT_RETENTION_S),
            drain_interval: Duration::from_millis(DEFAULT_DRAIN_MS),
            remove_dead_regions: true,
            flush_interval: Duration::from_secs(DEFAULT_FLUSH_S),
            legacy_socket: Some(PathBuf::from(DEFAULT_LEGACY_SOCKET)),
            legacy_socket_mode: 0o660,
            legacy_socket_group: None,
            legacy_version: None,
            legacy_max_connections: DEFAULT_LEGACY_MAX_CONNECTIONS,
            tt_metal_dir: Some(PathBuf::from(ttmem_ttmetal::DEFAULT_DIR)),
            proc_root: PathBuf::from(ttmem_ttmetal::DEFAULT_PROC_ROOT),
            api_max_connections: DEFAULT_API_MAX_CONNECTIONS,
            api_max_connections_per_user: DEFAULT_API_MAX_CONNECTIONS_PER_USER,
            api_header_timeout: Duration::from_secs(DEFAULT_API_HEADER_TIMEOUT_S),
            max_regions_per_user: DEFAULT_MAX_REGIONS_PER_USER,
            max_exited_processes: DEFAULT_MAX_EXITED_PROCESSES,
            max_exited_allocations: DEFAULT_MAX_EXITED_ALLOCATIONS,
            flight_recorder_events: DEFAULT_FLIGHT_RECORDER_EVENTS,
            api_token_file: None,
            api_tcp_detail: false,
            alerts: crate::alerting::AlertsConfig::default(),
            hostname: None,
            peers: Vec::new(),
        }
    }

    /// Defaults, then the config file, then the environment, then the flags.
    pub fn load(flags: &Overrides, get: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Self::defaults(get);
        let named = flags.config_file.clone().or_else(|| get(ENV_CONFIG).map(PathBuf::from));
        let file = match &named {
            Some(p) => Some(read_file(p)?),
            None => {
                let p = default_config_file(get);
                if p.exists() { Some(read_file(&p)?) } else { None }
            }
        };
        if let Some(f) = file {
            c.apply_file(f)?;
        }
        if let Some(v) = get(ENV_DIR).filter(|v| !v.is_empty()) {
            c.region_dir = v.into();
        }
        if let Some(v) = get(ENV_API_SOCKET).filter(|v| !v.is_empty()) {
            c.api_socket = v.into();
        }
        if let Some(v) = get(ENV_HTTP) {
            c.http = parse_http(&v)?;
        }
        if let Some(v) = get(ENV_DB).filter(|v| !v.is_empty()) {
            c.db = v.into();
        }
        if let Some(v) = get(ENV_RETENTION_S) {
            c.retention =
                Duration::from_secs(
                    v.trim()
                        .parse()
                        .map_err(|e: std::num::ParseIntError| ConfigError::Value {
                            what: ENV_RETENTION_S,
                            value: v.clone(),
                            why: e.to_string(),
                        })?,
                );
        }
        if let Some(v) = get(ENV_LEGACY_SOCKET) {
            c.legacy_socket = parse_off(&v);
        }
        if let Some(v) = get(ENV_TT_METAL_DIR) {
            c.tt_metal_dir = parse_off(&v);
        }
        if let Some(v) = get(ENV_PROC_ROOT).filter(|v| !v.is_empty()) {
            c.proc_root = v.into();
        }
        if let Some(v) = &flags.tt_metal_dir {
            c.tt_metal_dir = Some(v.clone());
        }
        if flags.no_tt_metal {
            c.tt_metal_dir = None;
        }
        if let Some(v) = &flags.proc_root {
            c.proc_root = v.clone();
        }
        if let Some(v) = &flags.region_dir {
            c.region_dir = v.clone();
        }
        if let Some(v) = &flags.legacy_socket {
            c.legacy_socket = Some(v.clone());
        }
        if flags.no_legacy_socket {
            c.legacy_socket = None;
        }
        if let Some(v) = &flags.legacy_version {
            c.legacy_version = Some(parse_version(v)?);
        }
        if let Some(v) = &flags.api_socket {
            c.api_socket = v.clone();
        }
        if let Some(v) = &flags.http {
            c.http = parse_http(v)?;
        }
        if flags.no_http {
            c.http = None;
        }
        if let Some(v) = &flags.db {
            c.db = v.clone();
        }
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = f.region_dir {
            self.region_dir = v;
        }
        if let Some(v) = f.api_socket {
            self.api_socket = v;
        }
        if let Some(v) = f.api_socket_mode {
            self.api_socket_mode = u32::from_str_radix(v.trim(), 8).map_err(|e| ConfigError::Value {
                what: "api_socket_mode",
                value: v.clone(),
                why: e.to_string(),
            })? & 0o777;
        }
        if let Some(v) = f.http {
            self.http = parse_http(&v)?;
        }
        if let Some(v) = f.db {
            self.db = v;
        }
        if let Some(v) = f.retention_s {
            self.retention = Duration::from_secs(v);
        }
        if let Some(v) = f.drain_interval_ms {
            self.drain_interval = Duration::from_millis(v.clamp(1, 1000));
        }
        if let Some(v) = f.remove_dead_regions {
            self.remove_dead_regions = v;
        }
        if let Some(v) = f.flush_interval_s {
            self.flush_interval = Duration::from_secs(v.clamp(1, 3600));
        }
        if let Some(v) = f.legacy_socket {
            self.legacy_socket = parse_off(&v);
        }
        if let Some(v) = f.tt_metal_dir {
            self.tt_metal_dir = parse_off(&v);
        }
        if let Some(v) = f.proc_root {
            self.proc_root = v;
        }
        if let Some(v) = f.legacy_socket_mode {
            self.legacy_socket_mode = u32::from_str_radix(v.trim(), 8).map_err(|e| ConfigError::Value {
                what: "legacy_socket_mode",
                value: v.clone(),
                why: e.to_string(),
            })? & 0o777;
        }
        if let Some(v) = f.legacy_socket_group {
            self.legacy_socket_group = Some(v).filter(|g| !g.is_empty());
        }
        if let Some(v) = f.legacy_version.filter(|v| !v.trim().is_empty()) {
            self.legacy_version = Some(parse_version(&v)?);
        }
        if let Some(v) = f.legacy_max_connections {
            self.legacy_max_connections = v.clamp(1, 65536);
        }
        if let Some(v) = f.api_max_connections {
            self.api_max_connections = v.clamp(1, 65536);
        }
        if let Some(v) = f.api_max_connections_per_user {
            self.api_max_connections_per_user = v.clamp(1, 65536);
        }
        if let Some(v) = f.api_header_timeout_s {
            self.api_header_timeout = Duration::from_secs(v.clamp(1, 3600));
        }
        if let Some(v) = f.max_regions_per_user {
            self.max_regions_per_user = v.clamp(1, 1 << 20);
        }
        if let Some(v) = f.max_exited_processes {
            self.max_exited_processes = v.clamp(1, 1 << 20);
        }
        if let Some(v) = f.max_exited_allocations {
            self.max_exited_allocations = v.max(1);
        }
        if let Some(v) = f.flight_recorder_events {
            self.flight_recorder_events = v.clamp(1, ttmem_ledger::MAX_FLIGHT_RECORDER_EVENTS);
        }
        if let Some(v) = f.api_token_file {
            self.api_token_file = Some(v).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = f.api_tcp_detail {
            self.api_tcp_detail = v;
        }
        if let Some(v) = f.hostname {
            let v = v.trim().to_string();
            if v.len() > 253 || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(ConfigError::Value {
                    what: "hostname",
                    value: v,
                    why: "a host name has at most 253 characters, none blank or control".into(),
                });
            }
            self.hostname = Some(v).filter(|h| !h.is_empty());
        }
        if let Some(v) = f.peers {
            self.peers = crate::api::peers::check(v).map_err(ConfigError::Peers)?;
        }
        if let Some(v) = f.alerts {
            self.alerts = crate::alerting::AlertsConfig::from_section(v).map_err(ConfigError::Alerts)?;
        }
        Ok(())
    }
}

/// What `ttmem serve --check-config` prints: the settings in force, one per line.
pub fn describe(c: &Config) -> String {
    let path = |p: &Option<PathBuf>| p.as_ref().map_or("off".to_string(), |p| p.display().to_string());
    let mut out = format!(
        "configuration is valid\nregion_dir = {}\napi_socket = {} (mode {:o})\nhttp = {}\ndb = {}\nlegacy_socket = {}\ntt_metal_dir = {}\nretention_s = {}\n",
        c.region_dir.display(),
        c.api_socket.display(),
        c.api_socket_mode,
        c.http.map_or("off".to_string(), |a| a.to_string()),
        c.db.display(),
        path(&c.legacy_socket),
        path(&c.tt_metal_dir),
        c.retention.as_secs(),
    );
    out.push_str(&format!(
        "alerts: every {} s, {} rules\n",
        c.alerts.interval.as_secs(),
        c.alerts.rules.len()
    ));
    for r in &c.alerts.rules {
        out.push_str(&format!(
            "  {} ({}, {}, for {} s): {}\n",
            r.name,
            r.condition.kind(),
            r.severity.as_str(),
            r.for_s,
            r.condition.describe()
        ));
    }
    for n in &c.alerts.notify {
        out.push_str(&format!(
            "  notify {:?} {}\n",
            n.kind,
            n.url
                .clone()
                .or_else(|| n.command.as_ref().map(|c| c.join(" ")))
                .unwrap_or_default()
        ));
    }
    for p in &c.peers {
        out.push_str(&format!("peer {} at {}\n", p.name, p.url));
    }
    out
}

fn default_config_file(get: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if is_root() {
        PathBuf::from("/etc/ttmem/ttmem.toml")
    } else {
        get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".config"))
            .join("ttmem/ttmem.toml")
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.into(),
        message,
    })
}

/// Parses config file text.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

fn parse_off(v: &str) -> Option<PathBuf> {
    let v = v.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("off")).then(|| PathBuf::from(v))
}

fn parse_version(v: &str) -> Result<ttmem_legacy::Version, ConfigError> {
    v.parse().map_err(|why| ConfigError::Value {
        what: "legacy protocol version",
        value: v.to_string(),
        why,
    })
}

fn parse_http(v: &str) -> Result<Option<SocketAddr>, ConfigError> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("off") || v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|e: std::net::AddrParseError| ConfigError::Value {
            what: "http address",
            value: v.to_string(),
            why: format!("{e} (expected ADDR:PORT, e.g. {DEFAULT_HTTP}, or off)"),
        })
}

#[cfg(test)]
mod tests;
