//! `ttmem alerts`: the alerts firing and pending, those resolved lately, and the rules.

use std::fmt::Write as _;

use ttmem_model::api::{Alert, AlertState, Alerts};

/// How long ago `then_ns` was at `now_ns`, in words (`45s`, `12m`, `3h`, `2d`).
fn ago(now_ns: u64, then_ns: u64) -> String {
    let s = now_ns.saturating_sub(then_ns) / 1_000_000_000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn line(out: &mut String, a: &Alert, now_ns: u64) {
    let (word, since) = match a.state {
        AlertState::Firing => ("FIRING", a.firing_since_unix_ns.unwrap_or(a.active_since_unix_ns)),
        AlertState::Pending => ("pending", a.active_since_unix_ns),
        AlertState::Resolved => ("resolved", a.resolved_unix_ns.unwrap_or(a.active_since_unix_ns)),
    };
    let _ = writeln!(
        out,
        "{word:<8} {:<8} {:<22} {:>5}  {}",
        a.severity,
        a.rule,
        ago(now_ns, since),
        a.summary
    );
}

/// The listing: active alerts (firing first), then those resolved lately (newest first, at
/// most `resolved_max`), then a line on the rules in force.
pub fn render_alerts(a: &Alerts, now_ns: u64, resolved_max: usize) -> String {
    let mut out = String::new();
    let firing = a.active.iter().filter(|x| x.state == AlertState::Firing).count();
    let _ = writeln!(
        out,
        "{firing} firing, {} pending, {} rule{}{}",
        a.active.len() - firing,
        a.rules.len(),
        if a.rules.len() == 1 { "" } else { "s" },
        if a.notifications_failed > 0 {
            format!(" ({} notifications failed)", a.notifications_failed)
        } else {
            String::new()
        }
    );
    if !a.active.is_empty() || !a.resolved.is_empty() {
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:<22} {:>5}  SUMMARY",
            "STATE", "SEVERITY", "RULE", "SINCE"
        );
    }
    for x in &a.active {
        line(&mut out, x, now_ns);
    }
    for x in a.resolved.iter().take(resolved_max) {
        line(&mut out, x, now_ns);
    }
    out
}

/// One line for a monitor's header: what fires, or None when nothing does.
pub fn alerts_line(a: &Alerts) -> Option<String> {
    let firing: Vec<&Alert> = a.active.iter().filter(|x| x.state == AlertState::Firing).collect();
    let first = firing.first()?;
    Some(if firing.len() == 1 {
        format!("ALERT {}: {}", first.rule, first.summary)
    } else {
        format!("{} ALERTS, first {}: {}", firing.len(), first.rule, first.summary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttmem_model::api::AlertRuleInfo;

    const S: u64 = 1_000_000_000;

    fn alert(rule: &str, state: AlertState, since_s: u64, summary: &str) -> Alert {
        Alert {
            rule: rule.into(),
            kind: "threshold".into(),
            severity: "warning".into(),
            state,
            labels: Default::default(),
            summary: summary.into(),
            value: Some(1.0),
            active_since_unix_ns: since_s * S,
            firing_since_unix_ns: (state != AlertState::Pending).then_some((since_s + 60) * S),
            resolved_unix_ns: (state == AlertState::Resolved).then_some((since_s + 600) * S),
        }
    }

    #[test]
    fn the_listing_puts_firing_first_then_pending_then_resolved() {
        let rule = AlertRuleInfo {
            name: "TtmemDramHigh".into(),
            kind: "threshold".into(),
            severity: "warning".into(),
            for_s: 60,
            condition: "DRAM at least 90% used".into(),
        };
        let a = Alerts {
            active: vec![
                alert(
                    "TtmemDramHigh",
                    AlertState::Firing,
                    1000,
                    "DRAM of chip 0 (0xa) is 93.0% used",
                ),
                alert(
                    "TtmemDramFullSoon",
                    AlertState::Pending,
                    1900,
                    "DRAM of chip 1 (0xb) will be full in 40 min",
                ),
            ],
            resolved: vec![alert(
                "TtmemEventLoss",
                AlertState::Resolved,
                0,
                "python3 (pid 7) lost 12 events",
            )],
            rules: vec![rule],
            notifications_failed: 2,
        };
        insta::assert_snapshot!(render_alerts(&a, 2000 * S, 10));
        assert_eq!(
            alerts_line(&a).unwrap(),
            "ALERT TtmemDramHigh: DRAM of chip 0 (0xa) is 93.0% used"
        );
        let quiet = Alerts {
            active: vec![],
            resolved: vec![],
            rules: vec![],
            notifications_failed: 0,
        };
        assert_eq!(alerts_line(&quiet), None);
        assert_eq!(render_alerts(&quiet, 0, 10), "0 firing, 0 pending, 0 rules\n");
    }
}
