//! Alerts in the database: each alert's row (by fingerprint and start) follows its state, so
//! the table keeps when every alert was pending, fired and was resolved.

use rusqlite::params;
use ttmem_model::api::{Alert, AlertState};

use crate::{Store, StoreError, sql};

impl Store {
    /// Writes alerts as they are now (inserted, or updated in place), in one transaction.
    pub fn record_alerts(&mut self, alerts: &[Alert]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO alerts (fingerprint, active_since_unix_ns, rule, kind, severity, state, labels,
                         summary, value, firing_since_unix_ns, resolved_unix_ns)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (fingerprint, active_since_unix_ns) DO UPDATE SET
                         state = excluded.state, summary = excluded.summary, value = excluded.value,
                         firing_since_unix_ns = excluded.firing_since_unix_ns,
                         resolved_unix_ns = excluded.resolved_unix_ns",
                )
                .map_err(err)?;
            for a in alerts {
                stmt.execute(params![
                    a.fingerprint(),
                    sql(a.active_since_unix_ns),
                    a.rule,
                    a.kind,
                    a.severity,
                    a.state.as_str(),
                    serde_json::to_string(&a.labels).unwrap_or_else(|_| "{}".into()),
                    a.summary,
                    a.value.filter(|v| v.is_finite()),
                    a.firing_since_unix_ns.map(sql),
                    a.resolved_unix_ns.map(sql),
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Alerts in `states` (all when empty), the latest started first, at most `limit`.
    pub fn alerts(&self, states: &[AlertState], limit: usize) -> Result<Vec<Alert>, StoreError> {
        // The states are this build's own words, never input: safe to write into the query.
        let filter = if states.is_empty() {
            String::new()
        } else {
            let words: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            format!("WHERE state IN ({})", words.join(", "))
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT rule, kind, severity, state, labels, summary, value, active_since_unix_ns,
                     firing_since_unix_ns, resolved_unix_ns
                 FROM alerts {filter} ORDER BY active_since_unix_ns DESC LIMIT ?1"
            ))
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![sql(limit as u64)], |r| {
                let state: String = r.get(3)?;
                let labels: String = r.get(4)?;
                Ok(AlertState::parse(&state).map(|state| Alert {
                    rule: r.get(0).unwrap_or_default(),
                    kind: r.get(1).unwrap_or_default(),
                    severity: r.get(2).unwrap_or_default(),
                    state,
                    labels: serde_json::from_str(&labels).unwrap_or_default(),
                    summary: r.get(5).unwrap_or_default(),
                    value: r.get::<_, Option<f64>>(6).ok().flatten(),
                    active_since_unix_ns: r.get::<_, i64>(7).map_or(0, |v| v.max(0) as u64),
                    firing_since_unix_ns: r.get::<_, Option<i64>>(8).ok().flatten().map(|v| v.max(0) as u64),
                    resolved_unix_ns: r.get::<_, Option<i64>>(9).ok().flatten().map(|v| v.max(0) as u64),
                }))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            // A row this build cannot read (a state it does not know) is skipped, not fatal.
            if let Some(a) = row.map_err(self.err())? {
                out.push(a);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState, since: u64) -> Alert {
        Alert {
            rule: "TtmemDramHigh".into(),
            kind: "threshold".into(),
            severity: "warning".into(),
            state,
            labels: [("device".to_string(), "0".to_string())].into(),
            summary: "DRAM of chip 0 is 95% used".into(),
            value: Some(95.0),
            active_since_unix_ns: since,
            firing_since_unix_ns: (state != AlertState::Pending).then_some(since + 60),
            resolved_unix_ns: (state == AlertState::Resolved).then_some(since + 120),
        }
    }

    #[test]
    fn an_alert_row_follows_its_states_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ttmem.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.record_alerts(&[alert(AlertState::Pending, 1_000)]).unwrap();
            s.record_alerts(&[alert(AlertState::Firing, 1_000), alert(AlertState::Pending, 5_000)])
                .unwrap();
            let mut unknown = alert(AlertState::Firing, 9_000);
            unknown.value = None;
            s.record_alerts(&[unknown]).unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let active = s.alerts(&[AlertState::Pending, AlertState::Firing], 100).unwrap();
        assert_eq!(active.len(), 3);
        assert_eq!(active[0].value, None);
        assert_eq!(active[1], alert(AlertState::Pending, 5_000));
        assert_eq!(active[2], alert(AlertState::Firing, 1_000));
        s.record_alerts(&[alert(AlertState::Resolved, 1_000)]).unwrap();
        assert_eq!(
            s.alerts(&[AlertState::Resolved], 100).unwrap(),
            [alert(AlertState::Resolved, 1_000)]
        );
        assert_eq!(s.alerts(&[], 2).unwrap().len(), 2);
        // Resolved alerts go with the retention; active ones stay.
        s.prune(0, 1_000_000).unwrap();
        assert!(s.alerts(&[AlertState::Resolved], 100).unwrap().is_empty());
        assert_eq!(s.alerts(&[], 100).unwrap().len(), 2);
    }
}
