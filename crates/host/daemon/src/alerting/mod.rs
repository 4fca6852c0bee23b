//! Alerts in the daemon: the config's `[alerts]` section, and the notifiers ([`notify`]) that
//! hand each transition to Alertmanager, a webhook or a command. The rules and their states
//! are `ttmem-alerts`; the collector evaluates them ([`crate::collector`]).

pub mod notify;

use std::time::Duration;

use serde::Deserialize;
use ttmem_alerts::Rule;

pub use notify::{NotifierConfig, Notifiers};

/// Default seconds between evaluations of the rules.
pub const DEFAULT_INTERVAL_S: u64 = 5;

/// The `[alerts]` section as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// Seconds between evaluations.
    pub interval_s: Option<u64>,
    /// Whether the built-in rules run beside the file's (default: only when it names none).
    pub default_rules: Option<bool>,
    /// The file's rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where transitions go.
    #[serde(default)]
    pub notify: Vec<NotifierConfig>,
}

/// The daemon's alert settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsConfig {
    /// Time between evaluations.
    pub interval: Duration,
    /// The rules in force.
    pub rules: Vec<Rule>,
    /// Where transitions go.
    pub notify: Vec<NotifierConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            interval: Duration::from_secs(DEFAULT_INTERVAL_S),
            rules: ttmem_alerts::default_rules(),
            notify: Vec::new(),
        }
    }
}

impl AlertsConfig {
    /// The settings a config file's section gives: its rules (with the built-in ones when it
    /// names none, or when asked), checked as a whole.
    pub fn from_section(s: AlertsSection) -> Result<AlertsConfig, String> {
        let with_defaults = s.default_rules.unwrap_or(s.rules.is_empty());
        let mut rules = if with_defaults {
            ttmem_alerts::default_rules()
        } else {
            Vec::new()
        };
        rules.retain(|d| !s.rules.iter().any(|r| r.name == d.name));
        rules.extend(s.rules);
        ttmem_alerts::check_rules(&rules)?;
        for n in &s.notify {
            n.check()?;
        }
        Ok(AlertsConfig {
            interval: Duration::from_secs(s.interval_s.unwrap_or(DEFAULT_INTERVAL_S).clamp(1, 3600)),
            rules,
            notify: s.notify,
        })
    }
}
