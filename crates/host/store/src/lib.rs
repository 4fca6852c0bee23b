//! The daemon's SQLite file: history samples and process records, with versioned migrations.
//!
//! Only the daemon opens it. Writes come in batches (one transaction per flush); a failed write
//! (a full disk, a read-only file) is an error the daemon logs while it keeps serving from
//! memory, and the batch is retried at the next flush.

#![deny(missing_docs)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use ttmem_history::{Pending, SeriesKey, TIERS};

mod alerts;

/// Schema migrations, in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: history and process records.
    "CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        category TEXT NOT NULL,
        pid INTEGER NOT NULL,          -- 0 for a device total
        start_time INTEGER NOT NULL,   -- 0 for a device total
        UNIQUE (device, category, pid, start_time)
    );
    CREATE TABLE samples (
        series INTEGER NOT NULL REFERENCES series(id),
        tier INTEGER NOT NULL,
        t INTEGER NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (series, tier, t)
    ) WITHOUT ROWID;
    CREATE TABLE processes (
        pid INTEGER NOT NULL,
        start_time INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        name TEXT NOT NULL,
        cmdline TEXT NOT NULL,
        started_unix_ns INTEGER NOT NULL,
        exited_unix_ns INTEGER,
        peak_bytes INTEGER NOT NULL,
        left_behind TEXT NOT NULL,     -- JSON: per device and category, bytes and counts
        PRIMARY KEY (pid, start_time)
    );
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        time_unix_ns INTEGER NOT NULL,
        rule TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL
    );",
    // 2: alerts with their states (the first table was never written).
    "DROP TABLE alerts;
    CREATE TABLE alerts (
        fingerprint TEXT NOT NULL,       -- the rule and the subject's labels
        active_since_unix_ns INTEGER NOT NULL,
        rule TEXT NOT NULL,
        kind TEXT NOT NULL,
        severity TEXT NOT NULL,
        state TEXT NOT NULL,             -- pending, firing or resolved
        labels TEXT NOT NULL,            -- JSON object
        summary TEXT NOT NULL,
        value REAL,
        firing_since_unix_ns INTEGER,
        resolved_unix_ns INTEGER,
        PRIMARY KEY (fingerprint, active_since_unix_ns)
    );
    CREATE INDEX alerts_by_state ON alerts (state);",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused (a full disk, a read-only or corrupt file).
    #[error("database {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: rusqlite::Error,
    },
    /// The file was written by a newer ttmem.
    #[error(
        "database {path} has schema version {found}, newer than this ttmem's {SCHEMA_VERSION}; upgrade ttmem or pass another --db"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// The directory could not be created.
    #[error("cannot create {dir}: {source}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The database file could not be created or made private.
    #[error("cannot create or protect {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// What is kept of a process after it exits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks since boot).
    pub start_time: u64,
    /// User id.
    pub uid: u32,
    /// Name.
    pub name: String,
    /// Command line.
    pub cmdline: String,
    /// When it registered, ns since the epoch.
    pub started_unix_ns: u64,
    /// When it exited (None: running at the last write).
    pub exited_unix_ns: Option<u64>,
    /// Sum of per-category peaks.
    pub peak_bytes: u64,
    /// What it held at exit, per device and category (the `ps` process `devices` objects).
    pub left_behind: serde_json::Value,
}

/// One series' persisted points of one tier: (series, tier, points oldest first).
pub type Loaded = (SeriesKey, usize, Vec<(u64, u64)>);

/// The open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    series: HashMap<SeriesKey, i64>,
}

/// SQLite integers are i64: clamp, so a bound like `u64::MAX` means "to the end", not -1.
fn sql(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

fn key_cols(k: &SeriesKey) -> (u32, u64) {
    k.process.unwrap_or((0, 0))
}

impl Store {
    /// Opens (creating if needed) and migrates the database.
    /// The file is the daemon's user's only (mode 0600; SQLite gives its journal files the
    /// same mode): it holds every process's command line and history.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Directory {
                    dir: dir.into(),
                    source,
                })?;
        }
        let io = |source| StoreError::File {
            path: path.into(),
            source,
        };
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            // A file from an earlier version, or created by hand: made private.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700)).map_err(io)?;
            tracing::info!(db = %path.display(), "made the database readable by its owner only (was {:o})", mode & 0o777);
        }
        let err = |source| StoreError::Sqlite {
            path: path.into(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(err)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(err)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.into(),
                found: version,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", i as i64 + 1).map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::info!(db = %path.display(), version = i + 1, "migrated database");
        }
        let mut store = Store {
            conn,
            path: path.into(),
            series: HashMap::new(),
        };
        store.load_series_ids()?;
        Ok(store)
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn load_series_ids(&mut self) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, device, category, pid, start_time FROM series")
            .map_err(self.err())?;
        let rows: Vec<(i64, SeriesKey)> = stmt
            .query_map([], |r| {
                let pid: u32 = r.get(3)?;
                let start: u64 = r.get::<_, i64>(4)? as u64;
                Ok((
                    r.get(0)?,
                    SeriesKey {
                        device: r.get(1)?,
                        category: r.get(2)?,
                        process: (pid != 0).then_some((pid, start)),
                    },
                ))
            })
            .map_err(self.err())?
            .collect::<Result<_, _>>()
            .map_err(self.err())?;
        drop(stmt);
        self.series = rows.into_iter().map(|(id, k)| (k, id)).collect();
        Ok(())
    }

    /// The schema version of the open file.
    pub fn version(&self) -> Result<i64, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(self.err())
    }

    /// Writes completed buckets in one transaction.
    pub fn write_samples(&mut self, pending: &[Pending]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut new_ids = Vec::new();
        {
            let mut ins_series =
                tx.prepare_cached("INSERT INTO series (device, category, pid, start_time) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE SET device = device RETURNING id").map_err(err)?;
            let mut ins = tx
                .prepare_cached("INSERT OR REPLACE INTO samples (series, tier, t, value) VALUES (?1, ?2, ?3, ?4)")
                .map_err(err)?;
            for p in pending {
                let id = match self.series.get(&p.key) {
                    Some(&id) => id,
                    None => {
                        let (pid, start) = key_cols(&p.key);
                        let id: i64 = ins_series
                            .query_row(params![p.key.device, p.key.category, pid, sql(start)], |r| r.get(0))
                            .map_err(err)?;
                        new_ids.push((p.key.clone(), id));
                        self.series.insert(p.key.clone(), id);
                        id
                    }
                };
                ins.execute(params![id, p.tier as i64, sql(p.t), sql(p.value)])
                    .map_err(err)?;
            }
        }
        match tx.commit() {
            Ok(()) => Ok(pending.len()),
            Err(e) => {
                // The series ids inserted in the failed transaction do not exist.
                for (k, _) in new_ids {
                    self.series.remove(&k);
                }
                Err(err(e))
            }
        }
    }

    /// Points of every series with time ≥ `since[tier]`, per tier, oldest first.
    pub fn load_history(&self, since: [u64; 3]) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::new();
        let by_id: HashMap<i64, &SeriesKey> = self.series.iter().map(|(k, &id)| (id, k)).collect();
        let mut stmt = self
            .conn
            .prepare("SELECT series, t, value FROM samples WHERE tier = ?1 AND t >= ?2 ORDER BY series, t")
            .map_err(self.err())?;
        for (tier, since) in since.iter().enumerate() {
            let rows = stmt
                .query_map(params![tier as i64, sql(*since)], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })
                .map_err(self.err())?;
            let mut current: Option<(i64, Vec<(u64, u64)>)> = None;
            for row in rows {
                let (id, t, v) = row.map_err(self.err())?;
                if current.as_ref().is_some_and(|(c, _)| *c != id) {
                    let (c, pts) = current.take().expect("checked");
                    if let Some(k) = by_id.get(&c) {
                        out.push(((*k).clone(), tier, pts));
                    }
                }
                current.get_or_insert_with(|| (id, Vec::new())).1.push((t, v));
            }
            if let Some((c, pts)) = current
                && let Some(k) = by_id.get(&c)
            {
                out.push(((*k).clone(), tier, pts));
            }
        }
        Ok(out)
    }

    /// Points of one series and tier in `[from, to]`, plus the one in force at `from`.
    pub fn query(&self, key: &SeriesKey, tier: usize, from: u64, to: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let Some(&id) = self.series.get(key) else {
            return Ok(Vec::new());
        };
        let before: Option<u64> = self
            .conn
            .query_row(
                "SELECT value FROM samples WHERE series = ?1 AND tier = ?2 AND t < ?3 ORDER BY t DESC LIMIT 1",
                params![id, tier as i64, sql(from)],
                |r| Ok(r.get::<_, i64>(0)? as u64),
            )
            .optional()
            .map_err(self.err())?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT t, value FROM samples WHERE series = ?1 AND tier = ?2 AND t >= ?3 AND t <= ?4 ORDER BY t",
            )
            .map_err(self.err())?;
        let mut out: Vec<(u64, u64)> = before.map(|v| (from, v)).into_iter().collect();
        for row in stmt
            .query_map(params![id, tier as i64, sql(from), sql(to)], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(self.err())?
        {
            out.push(row.map_err(self.err())?);
        }
        Ok(out)
    }

    /// Writes (or updates) a process record.
    pub fn record_process(&mut self, r: &ProcessRecord) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO processes (pid, start_time, uid, name, cmdline, started_unix_ns, exited_unix_ns, peak_bytes, left_behind)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (pid, start_time) DO UPDATE SET exited_unix_ns = excluded.exited_unix_ns,
                   peak_bytes = excluded.peak_bytes, left_behind = excluded.left_behind",
                params![
                    r.pid,
                    sql(r.start_time),
                    r.uid,
                    r.name,
                    r.cmdline,
                    sql(r.started_unix_ns),
                    r.exited_unix_ns.map(sql),
                    sql(r.peak_bytes),
                    r.left_behind.to_string()
                ],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Process records started or exited since `since_unix_ns`, newest first.
    pub fn processes(&self, since_unix_ns: u64) -> Result<Vec<ProcessRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT pid, start_time, uid, name, cmdline, started_unix_ns, exited_unix_ns, peak_bytes, left_behind FROM processes
                 WHERE started_unix_ns >= ?1 OR exited_unix_ns >= ?1 OR exited_unix_ns IS NULL ORDER BY started_unix_ns DESC",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![sql(since_unix_ns)], |r| {
                let left: String = r.get(8)?;
                Ok(ProcessRecord {
                    pid: r.get(0)?,
                    start_time: r.get::<_, i64>(1)? as u64,
                    uid: r.get(2)?,
                    name: r.get(3)?,
                    cmdline: r.get(4)?,
                    started_unix_ns: r.get::<_, i64>(5)? as u64,
                    exited_unix_ns: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    peak_bytes: r.get::<_, i64>(7)? as u64,
                    left_behind: serde_json::from_str(&left).unwrap_or(serde_json::Value::Null),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Deletes samples older than each tier's window, and process records and alerts that ended
    /// before `keep_processes_since_unix_ns`.
    pub fn prune(&mut self, now_s: u64, keep_processes_since_unix_ns: u64) -> Result<(), StoreError> {
        for (i, t) in TIERS.iter().enumerate() {
            self.conn
                .execute(
                    "DELETE FROM samples WHERE tier = ?1 AND t < ?2",
                    params![i as i64, sql(now_s.saturating_sub(t.window_s))],
                )
                .map_err(self.err())?;
        }
        self.conn
            .execute(
                "DELETE FROM processes WHERE exited_unix_ns IS NOT NULL AND exited_unix_ns < ?1",
                params![sql(keep_processes_since_unix_ns)],
            )
            .map_err(self.err())?;
        self.conn
            .execute(
                "DELETE FROM alerts WHERE resolved_unix_ns IS NOT NULL AND resolved_unix_ns < ?1",
                params![sql(keep_processes_since_unix_ns)],
            )
            .map_err(self.err())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(process: Option<(u32, u64)>) -> SeriesKey {
        SeriesKey {
            device: "tt-sim:0x1".into(),
            category: "DRAM".into(),
            process,
        }
    }

    #[test]
    fn samples_and_records_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/ttmem.db");
        {
            let mut s = Store::open(&path).unwrap();
            assert_eq!(s.version().unwrap(), SCHEMA_VERSION);
            let p = |k: SeriesKey, tier, t, value| Pending { key: k, tier, t, value };
            let n = s
                .write_samples(&[
                    p(key(None), 0, 100, 5),
                    p(key(None), 0, 101, 6),
                    p(key(Some((7, 9))), 0, 100, 1),
                    p(key(None), 2, 60, 6),
                ])
                .unwrap();
            assert_eq!(n, 4);
            s.write_samples(&[p(key(None), 0, 101, 7)]).unwrap(); // a bucket rewritten
            s.record_process(&ProcessRecord {
                pid: 7,
                start_time: 9,
                uid: 0,
                name: "x".into(),
                cmdline: "x --y".into(),
                started_unix_ns: 1_000,
                exited_unix_ns: None,
                peak_bytes: 10,
                left_behind: serde_json::json!([]),
            })
            .unwrap();
            s.record_process(&ProcessRecord {
                pid: 7,
                start_time: 9,
                uid: 0,
                name: "x".into(),
                cmdline: "x --y".into(),
                started_unix_ns: 1_000,
                exited_unix_ns: Some(2_000),
                peak_bytes: 10,
                left_behind: serde_json::json!([{"id": 0}]),
            })
            .unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.query(&key(None), 0, 0, 1000).unwrap(), vec![(100, 5), (101, 7)]);
        assert_eq!(
            s.query(&key(None), 0, 101, 1000).unwrap(),
            vec![(101, 5), (101, 7)],
            "the value in force at `from` first"
        );
        let loaded = s.load_history([0, 0, 0]).unwrap();
        assert_eq!(loaded.len(), 3, "two series in tier 0, one in tier 2");
        assert!(loaded.contains(&(key(Some((7, 9))), 0, vec![(100, 1)])));
        let recs = s.processes(0).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].exited_unix_ns, Some(2_000));
        assert_eq!(recs[0].left_behind, serde_json::json!([{"id": 0}]));
    }

    #[test]
    fn prune_keeps_each_tier_window() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        let p = |tier, t| Pending {
            key: key(None),
            tier,
            t,
            value: t,
        };
        s.write_samples(&[p(0, 10), p(0, 5000), p(1, 10), p(2, 10)]).unwrap();
        s.prune(5000, 0).unwrap();
        assert_eq!(s.query(&key(None), 0, 0, u64::MAX).unwrap(), vec![(5000, 5000)]);
        assert_eq!(
            s.query(&key(None), 1, 0, u64::MAX).unwrap(),
            vec![(10, 10)],
            "the 10 s tier reaches a day back"
        );
    }

    #[test]
    fn a_newer_or_unusable_file_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        let e = Store::open(&path).err().unwrap();
        assert!(
            e.to_string()
                .contains(&format!("schema version 99, newer than this ttmem's {SCHEMA_VERSION}")),
            "{e}"
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        let e = Store::open(&junk).err().unwrap();
        assert!(
            e.to_string().starts_with(&format!("database {}", junk.display())),
            "{e}"
        );
        let e = Store::open(Path::new("/proc/ttmem/x.db")).err().unwrap();
        assert!(e.to_string().starts_with("cannot create /proc/ttmem"), "{e}");
    }

    #[test]
    fn the_file_and_its_journal_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = dir.path().join("new/ttmem.db");
        let mut s = Store::open(&path).unwrap();
        s.write_samples(&[]).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let wal = dir.path().join("new/ttmem.db-wal");
        assert!(!wal.exists() || mode(&wal) == 0o600, "{:o}", mode(&wal));
        drop(s);
        // A file an earlier version left readable by all is made private.
        let old = dir.path().join("old.db");
        std::fs::write(&old, b"").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&old).unwrap());
        assert_eq!(mode(&old), 0o600);
    }
}
