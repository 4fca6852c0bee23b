//! A fleet of workload processes, as `ttmem demo` runs them: each member is a separate
//! `ttmem sim run` process (the production path: its own region, written by the real client),
//! restarted when it exits (the crash profile dies on purpose), and stopped together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::SimError;
use crate::chip::Shape;
use crate::workload::Profile;

/// One workload process of a fleet.
#[derive(Copy, Clone, Debug)]
pub struct Member {
    /// What it does.
    pub profile: Profile,
    /// The board it opens (its chips are claimed when it starts).
    pub shape: Shape,
}

/// The demo's processes: a served model, a training run, a leak, a bursty job and a crash.
pub const DEMO: [Member; 5] = [
    Member {
        profile: Profile::LlmInference,
        shape: Shape::N300,
    },
    Member {
        profile: Profile::Training,
        shape: Shape::N150,
    },
    Member {
        profile: Profile::Leaky,
        shape: Shape::P150,
    },
    Member {
        profile: Profile::Bursty,
        shape: Shape::N150,
    },
    Member {
        profile: Profile::Crash,
        shape: Shape::N150,
    },
];

/// Running members, each with the region file names of every process it has been.
pub struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    members: Vec<(Member, Child)>,
    /// (pid, start time) of every process started, to remove what crashed ones left.
    started: Vec<(u32, Option<u64>)>,
    seed: u64,
}

impl Fleet {
    /// Starts every member as `exe sim run …` reporting to `dir`.
    pub fn start(exe: &Path, dir: &Path, members: &[Member]) -> Result<Fleet, SimError> {
        let mut f = Fleet {
            exe: exe.into(),
            dir: dir.into(),
            members: Vec::new(),
            started: Vec::new(),
            seed: 0,
        };
        for &m in members {
            let child = f.spawn(m)?;
            f.members.push((m, child));
        }
        Ok(f)
    }

    fn spawn(&mut self, m: Member) -> Result<Child, SimError> {
        self.seed += 1;
        let mut cmd = Command::new(&self.exe);
        cmd.args(["sim", "run", "--profile", m.profile.name(), "--shape", m.shape.name()])
            .args(["--seed", &self.seed.to_string()])
            .env("TTMEM_DIR", &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if m.profile == Profile::Crash {
            cmd.args(["--crash-after", &(4 + self.seed % 5).to_string()]);
        }
        let child = cmd.spawn().map_err(|source| SimError::Spawn {
            profile: m.profile.name().into(),
            source,
        })?;
        self.started.push((child.id(), start_time_of(child.id())));
        Ok(child)
    }

    /// Restarts members that exited; returns how many.
    pub fn restart_exited(&mut self) -> Result<usize, SimError> {
        let mut n = 0;
        for i in 0..self.members.len() {
            if let Ok(Some(_)) = self.members[i].1.try_wait() {
                let m = self.members[i].0;
                self.members[i].1 = self.spawn(m)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the fleet has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Stops every member (SIGTERM, then waits) and removes the regions that the fleet's own
    /// crashed processes left, and only those.
    pub fn stop(mut self) -> usize {
        for (_, c) in &self.members {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
        for (_, c) in &mut self.members {
            let _ = c.wait();
        }
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        for &(pid, start) in &self.started {
            if let Some(start) = start {
                let _ = std::fs::remove_file(self.dir.join(ttmem_region::region_file_name(uid, pid, start)));
            }
        }
        self.members.len()
    }
}

/// A child's start time, read right after it started (so the region it creates is known by
/// name, and a later process reusing the pid is never mistaken for it).
fn start_time_of(pid: u32) -> Option<u64> {
    ttmem_region::identity::parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}
