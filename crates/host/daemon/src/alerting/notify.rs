//! Notifiers: each runs on a thread of its own behind a bounded queue, so a target that is
//! down, slow or failing costs the collector one `try_send`, never a wait. Each delivery is
//! tried a bounded number of times with a growing pause; what still fails is counted and logged.
//!
//! - `alertmanager`: POSTs the firing alerts (and those just resolved) to an Alertmanager's
//!   `/api/v2/alerts`, and again every `resend_s` while they fire, as Prometheus does, so that
//!   Alertmanager does not time them out. Silencing, grouping and routing are Alertmanager's.
//! - `webhook`: POSTs each transition (firing, resolved) as JSON.
//! - `exec`: runs a command per transition, the alert as JSON on its standard input and in
//!   `TTMEM_ALERT_*` variables, killed after the timeout.
//!
//! Plain `http://` only: a local Alertmanager, or a TLS proxy in front of a remote one.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ttmem_model::api::{Alert, AlertState};

use crate::outbound::Target;

/// Where alerts go.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifierKind {
    /// An Alertmanager's v2 API.
    Alertmanager,
    /// A URL that takes JSON.
    Webhook,
    /// A command.
    Exec,
}

/// One `[[alerts.notify]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    /// What it is.
    pub kind: NotifierKind,
    /// `http://HOST:PORT[/PATH]` (Alertmanager: its base URL).
    pub url: Option<String>,
    /// The program and its arguments (exec).
    pub command: Option<Vec<String>>,
    /// Seconds one attempt may take (default 5).
    pub timeout_s: Option<u64>,
    /// Attempts after the first (default 3).
    pub retries: Option<u32>,
    /// Seconds between resends of firing alerts to Alertmanager (default 60).
    pub resend_s: Option<u64>,
}

impl NotifierConfig {
    /// Whether the entry is usable; the error says what to fix.
    pub fn check(&self) -> Result<(), String> {
        match self.kind {
            NotifierKind::Alertmanager | NotifierKind::Webhook => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or("an alertmanager or webhook notifier needs url")?;
                Target::parse(url)?;
                if self.command.is_some() {
                    return Err("command applies to exec notifiers only".into());
                }
            }
            NotifierKind::Exec => {
                if self.command.as_ref().is_none_or(|c| c.is_empty() || c[0].is_empty()) {
                    return Err("an exec notifier needs command = [\"program\", \"arg\", …]".into());
                }
                if self.url.is_some() {
                    return Err("url applies to alertmanager and webhook notifiers only".into());
                }
            }
        }
        if self.timeout_s.is_some_and(|t| t == 0 || t > 300) {
            return Err("timeout_s must be 1 to 300".into());
        }
        if self.retries.is_some_and(|r| r > 10) {
            return Err("retries must be 0 to 10".into());
        }
        Ok(())
    }

    fn name(&self) -> String {
        match self.kind {
            NotifierKind::Alertmanager => format!("alertmanager {}", self.url.as_deref().unwrap_or("")),
            NotifierKind::Webhook => format!("webhook {}", self.url.as_deref().unwrap_or("")),
            NotifierKind::Exec => format!(
                "exec {}",
                self.command.as_ref().and_then(|c| c.first()).map_or("", |s| s)
            ),
        }
    }
}

/// Deliveries queued per notifier at most; beyond, new ones are dropped and counted.
const QUEUE: usize = 64;

/// What a notifier thread is handed: the transitions, and the alerts firing now.
struct Notice {
    changes: Vec<Alert>,
    firing: Vec<Alert>,
}

/// The running notifiers.
pub struct Notifiers {
    queues: Vec<(String, SyncSender<Notice>)>,
    failed: Arc<AtomicU64>,
}

impl Notifiers {
    /// Starts a thread per notifier. `hostname` labels what goes to Alertmanager.
    pub fn start(configs: &[NotifierConfig], hostname: &str) -> Notifiers {
        let failed = Arc::new(AtomicU64::new(0));
        let mut queues = Vec::new();
        for c in configs {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            let (c2, failed2, host) = (c.clone(), failed.clone(), hostname.to_string());
            let spawned = std::thread::Builder::new()
                .name("ttmem-notify".into())
                .spawn(move || run(c2, rx, failed2, host));
            match spawned {
                Ok(_) => queues.push((c.name(), tx)),
                Err(e) => tracing::error!("cannot start notifier {}: {e}", c.name()),
            }
        }
        Notifiers { queues, failed }
    }

    /// Hands transitions to every notifier without waiting; a full queue drops them (counted).
    /// With no transitions, hands Alertmanager what fires (at start, alerts that were firing
    /// when the daemon last stopped).
    pub fn notify(&self, changes: &[Alert], firing: &[Alert]) {
        let worth = if changes.is_empty() {
            !firing.is_empty()
        } else {
            changes.iter().any(|a| a.state != AlertState::Pending)
        };
        if !worth {
            return;
        }
        for (name, q) in &self.queues {
            let notice = Notice {
                changes: changes.to_vec(),
                firing: firing.to_vec(),
            };
            match q.try_send(notice) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("notifier {name} is behind; a notification was dropped");
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Notifications given up on since the start.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A notifier's thread: delivers each notice, and for Alertmanager resends what fires.
fn run(c: NotifierConfig, rx: Receiver<Notice>, failed: Arc<AtomicU64>, host: String) {
    let timeout = Duration::from_secs(c.timeout_s.unwrap_or(5));
    let attempts = 1 + c.retries.unwrap_or(3);
    let resend = Duration::from_secs(c.resend_s.unwrap_or(60).max(1));
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        tracing::error!("notifier {}: cannot start its runtime", c.name());
        return;
    };
    let target = c.url.as_deref().and_then(|u| Target::parse(u).ok());
    let mut firing: Vec<Alert> = Vec::new();
    let mut last_sent = Instant::now();
    loop {
        let notice = match rx.recv_timeout(resend) {
            Ok(n) => Some(n),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let now = ttmem_model::now_ns();
        let deliveries: Vec<Delivery> = match (c.kind, notice) {
            (NotifierKind::Alertmanager, n) => {
                let mut send: Vec<Alert> = Vec::new();
                if let Some(n) = n {
                    firing = n.firing;
                    send.extend(
                        n.changes
                            .into_iter()
                            .filter(|a| a.state == AlertState::Resolved && a.firing_since_unix_ns.is_some()),
                    );
                } else if last_sent.elapsed() < resend || firing.is_empty() {
                    continue;
                }
                send.extend(firing.iter().cloned());
                let body = alertmanager_body(&send, &host, now, resend);
                vec![Delivery {
                    what: format!("{} alerts", send.len()),
                    body,
                    env: Vec::new(),
                }]
            }
            (_, None) => continue,
            (kind, Some(n)) => n
                .changes
                .into_iter()
                .filter(|a| {
                    a.state == AlertState::Firing
                        || (a.state == AlertState::Resolved && a.firing_since_unix_ns.is_some())
                })
                .map(|a| {
                    let body = serde_json::to_vec(&WebhookBody {
                        version: 1,
                        hostname: &host,
                        alert: &a,
                    })
                    .unwrap_or_default();
                    let env = if kind == NotifierKind::Exec {
                        alert_env(&a)
                    } else {
                        Vec::new()
                    };
                    Delivery {
                        what: format!("{} {}", a.rule, a.state.as_str()),
                        body,
                        env,
                    }
                })
                .collect(),
        };
        last_sent = Instant::now();
        for Delivery { what, body, env } in deliveries {
            let mut pause = Duration::from_millis(500);
            let mut outcome = Err(String::new());
            for attempt in 0..attempts {
                if attempt > 0 {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                outcome = match (c.kind, &target) {
                    (NotifierKind::Alertmanager, Some(t)) => {
                        rt.block_on(t.post("/api/v2/alerts", body.clone(), timeout))
                    }
                    (NotifierKind::Webhook, Some(t)) => rt.block_on(t.post("", body.clone(), timeout)),
                    (NotifierKind::Exec, _) => exec(c.command.as_deref().unwrap_or_default(), &body, &env, timeout),
                    _ => Err("no target".into()),
                };
                match &outcome {
                    Ok(()) => break,
                    Err(e) if e.starts_with("refused:") => break, // a 4xx: trying again will not help
                    Err(_) => {}
                }
            }
            match outcome {
                Ok(()) => tracing::debug!("notifier {}: delivered {what}", c.name()),
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("notifier {}: gave up delivering {what}: {e}", c.name());
                }
            }
        }
    }
}

/// One POST or one run of the command.
struct Delivery {
    /// What it carries, for the log.
    what: String,
    body: Vec<u8>,
    /// The command's environment (exec).
    env: Vec<(String, String)>,
}

/// What a webhook receives (and an exec'd command on its standard input).
#[derive(Serialize)]
struct WebhookBody<'a> {
    version: u32,
    hostname: &'a str,
    alert: &'a Alert,
}

/// One alert as Alertmanager's v2 API takes it (`postableAlert`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
}

fn alertmanager_body(alerts: &[Alert], host: &str, now_ns: u64, resend: Duration) -> Vec<u8> {
    let body: Vec<PostableAlert> = alerts
        .iter()
        .map(|a| {
            let mut labels = a.labels.clone();
            labels.insert("alertname".into(), a.rule.clone());
            labels.insert("severity".into(), a.severity.clone());
            labels.insert("kind".into(), a.kind.clone());
            labels.insert("hostname".into(), host.to_string());
            labels.insert("instance".into(), host.to_string());
            let annotations = std::collections::BTreeMap::from([("summary".to_string(), a.summary.clone())]);
            // A firing alert is valid for four resend intervals, as Prometheus sends them: if
            // the daemon dies, Alertmanager resolves it by itself.
            let ends = a
                .resolved_unix_ns
                .unwrap_or_else(|| now_ns.saturating_add(4 * resend.as_nanos() as u64));
            PostableAlert {
                labels,
                annotations,
                starts_at: rfc3339(a.firing_since_unix_ns.unwrap_or(a.active_since_unix_ns)),
                ends_at: rfc3339(ends),
            }
        })
        .collect();
    serde_json::to_vec(&body).unwrap_or_default()
}

fn alert_env(a: &Alert) -> Vec<(String, String)> {
    vec![
        ("TTMEM_ALERT_RULE".into(), a.rule.clone()),
        ("TTMEM_ALERT_STATE".into(), a.state.as_str().into()),
        ("TTMEM_ALERT_SEVERITY".into(), a.severity.clone()),
        ("TTMEM_ALERT_SUMMARY".into(), a.summary.clone()),
        (
            "TTMEM_ALERT_LABELS".into(),
            serde_json::to_string(&a.labels).unwrap_or_default(),
        ),
    ]
}

/// Runs `command` with `body` on its standard input; kills it after `timeout`.
fn exec(command: &[String], body: &[u8], env: &[(String, String)], timeout: Duration) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no command")?;
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input is its own business.
        let _ = stdin.write_all(body);
    }
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{program} failed ({status})")),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{program} ran over {} s and was killed", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// `unix_ns` as an RFC 3339 UTC time with milliseconds (what Alertmanager reads).
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = (unix_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_782_896_000_000_000), "2026-11-27T12:34:56.000Z");
    }

    #[test]
    fn bad_notifiers_say_what_to_fix() {
        let n = |kind, url: Option<&str>, command: Option<Vec<&str>>| NotifierConfig {
            kind,
            url: url.map(String::from),
            command: command.map(|c| c.into_iter().map(String::from).collect()),
            timeout_s: None,
            retries: None,
            resend_s: None,
        };
        assert!(
            n(NotifierKind::Alertmanager, None, None)
                .check()
                .unwrap_err()
                .contains("needs url")
        );
        assert!(
            n(NotifierKind::Webhook, Some("https://x:1"), None)
                .check()
                .unwrap_err()
                .contains("only http://")
        );
        assert!(
            n(NotifierKind::Exec, None, Some(vec![]))
                .check()
                .unwrap_err()
                .contains("needs command")
        );
        assert!(
            n(NotifierKind::Webhook, Some("http://127.0.0.1:9/hook"), None)
                .check()
                .is_ok()
        );
    }
}
