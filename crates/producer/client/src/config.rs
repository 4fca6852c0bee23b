//! Client configuration: defaults, overridden by `TTMEM_*` environment variables.

use std::path::PathBuf;

use ttmem_region::{DEFAULT_MAX_DEVICES, DEFAULT_MAX_SHARDS, DEFAULT_RING_EVENTS, DEFAULT_STRINGS_BYTES, Geometry};

use crate::ClientError;
use crate::clock::ClockMode;

/// Turns tracking off entirely when set to `1`, `true` or `yes`: nothing is created and every
/// call returns at once.
pub const ENV_DISABLE: &str = "TTMEM_DISABLE";
/// The region directory (default: [`ttmem_region::default_dir`]).
pub const ENV_DIR: &str = "TTMEM_DIR";
/// Events per thread ring, a power of two from 16 to 2^24 (default 16384).
pub const ENV_RING_EVENTS: &str = "TTMEM_RING_EVENTS";
/// Thread shards, 2 to 1024 (default 32); threads beyond share the last one.
pub const ENV_SHARDS: &str = "TTMEM_SHARDS";
/// The region file's mode in octal (default 600).
pub const ENV_REGION_MODE: &str = "TTMEM_REGION_MODE";
/// The process name readers show (default: the executable's file name).
pub const ENV_PROCESS_NAME: &str = "TTMEM_PROCESS_NAME";
/// `coarse` (default) or `tsc`: the clock events carry (see the `clock` module docs).
pub const ENV_CLOCK: &str = "TTMEM_CLOCK";
/// Coarse clock period in microseconds, 10 to 1000000 (default 1000).
pub const ENV_CLOCK_US: &str = "TTMEM_CLOCK_US";
/// Keep the region file on a clean exit when set to `1` (default: remove it).
pub const ENV_KEEP_ON_EXIT: &str = "TTMEM_KEEP_ON_EXIT";

/// How a [`crate::Tracker`] creates its region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// No region, no counting, near-zero cost.
    pub disabled: bool,
    /// Directory for the region file.
    pub dir: PathBuf,
    /// Events per shard ring (a power of two).
    pub ring_events: u32,
    /// Shards (thread slots; the last is shared).
    pub max_shards: u32,
    /// Device-table slots.
    pub max_devices: u32,
    /// String-table bytes.
    pub strings_bytes: u64,
    /// Region file mode.
    pub file_mode: u32,
    /// Keep the file at a clean exit.
    pub keep_on_exit: bool,
    /// Name readers show instead of the executable's (e.g. `python3` hosts naming their job).
    pub process_name: Option<String>,
    /// The clock events carry.
    pub clock: ClockMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            disabled: false,
            dir: ttmem_region::default_dir(),
            ring_events: DEFAULT_RING_EVENTS,
            max_shards: DEFAULT_MAX_SHARDS,
            max_devices: DEFAULT_MAX_DEVICES,
            strings_bytes: DEFAULT_STRINGS_BYTES,
            file_mode: 0o600,
            keep_on_exit: false,
            process_name: None,
            clock: ClockMode::Coarse(std::time::Duration::from_millis(1)),
        }
    }
}

fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

impl Config {
    /// Defaults overridden by the `TTMEM_*` variables. A malformed value is reported through
    /// `tracing` and the default kept: a typo must not stop the instrumented program.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Like [`Config::from_env`] with an explicit variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut c = Config::default();
        if let Some(v) = get(ENV_DISABLE) {
            c.disabled = truthy(&v);
        }
        if let Some(v) = get(ENV_DIR).filter(|v| !v.is_empty()) {
            c.dir = v.into();
        }
        let num = |key: &str, text: Option<String>, radix: u32| -> Option<u32> {
            let text = text?;
            match u32::from_str_radix(text.trim(), radix) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(variable = key, value = %text, "ignoring malformed ttmem setting");
                    None
                }
            }
        };
        if let Some(v) = num(ENV_RING_EVENTS, get(ENV_RING_EVENTS), 10) {
            c.ring_events = v;
        }
        if let Some(v) = num(ENV_SHARDS, get(ENV_SHARDS), 10) {
            c.max_shards = v;
        }
        if let Some(v) = num(ENV_REGION_MODE, get(ENV_REGION_MODE), 8) {
            c.file_mode = v & 0o666;
        }
        if let Some(v) = get(ENV_PROCESS_NAME).filter(|v| !v.is_empty()) {
            c.process_name = Some(v);
        }
        if let Some(v) = get(ENV_CLOCK) {
            match v.trim().to_ascii_lowercase().as_str() {
                "tsc" => c.clock = ClockMode::Tsc,
                "coarse" | "" => {}
                _ => tracing::warn!(variable = ENV_CLOCK, value = %v, "ignoring unknown clock (use coarse or tsc)"),
            }
        }
        if let (ClockMode::Coarse(_), Some(us)) = (c.clock, num(ENV_CLOCK_US, get(ENV_CLOCK_US), 10)) {
            c.clock = ClockMode::Coarse(std::time::Duration::from_micros(us.clamp(10, 1_000_000) as u64));
        }
        if let Some(v) = get(ENV_KEEP_ON_EXIT) {
            c.keep_on_exit = truthy(&v);
        }
        if c.geometry().is_err() {
            tracing::warn!(
                ring_events = c.ring_events,
                shards = c.max_shards,
                "ttmem ring or shard setting out of range; using defaults"
            );
            c.ring_events = DEFAULT_RING_EVENTS;
            c.max_shards = DEFAULT_MAX_SHARDS;
        }
        c
    }

    /// The region geometry this configuration asks for.
    pub fn geometry(&self) -> Result<Geometry, ClientError> {
        Geometry::new(self.max_devices, self.max_shards, self.ring_events, self.strings_bytes)
            .map_err(ClientError::Geometry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Config {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn environment_overrides_defaults() {
        let c = with(&[
            ("TTMEM_DISABLE", "1"),
            ("TTMEM_DIR", "/x"),
            ("TTMEM_RING_EVENTS", "1024"),
            ("TTMEM_REGION_MODE", "644"),
        ]);
        assert!(c.disabled);
        assert_eq!(c.dir, PathBuf::from("/x"));
        assert_eq!(c.ring_events, 1024);
        assert_eq!(c.file_mode, 0o644);
        assert!(!with(&[("TTMEM_DISABLE", "0")]).disabled);
        assert_eq!(with(&[("TTMEM_CLOCK", "tsc")]).clock, ClockMode::Tsc);
        assert_eq!(
            with(&[("TTMEM_CLOCK_US", "250")]).clock,
            ClockMode::Coarse(std::time::Duration::from_micros(250))
        );
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let c = with(&[("TTMEM_RING_EVENTS", "1000"), ("TTMEM_SHARDS", "lots")]);
        assert_eq!(c.ring_events, DEFAULT_RING_EVENTS);
        assert_eq!(c.max_shards, DEFAULT_MAX_SHARDS);
        assert!(c.geometry().is_ok());
    }
}
