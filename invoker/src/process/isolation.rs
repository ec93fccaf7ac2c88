//! Keeping execution environments apart: each runs as a user id of its own.
//!
//! Linux lets a process read another's `/proc/<pid>/environ` and memory, and signal it, only
//! when both run as the same user (or the reader is privileged). So every environment gets a
//! user id nobody else has, leased from a configured range for as long as its processes live:
//!
//! - its process environment and memory are out of reach of other functions' processes, and
//!   the broker's (root's) of all of them;
//! - its Runtime API accepts connections only from sockets its user owns (`runtime_api`);
//! - `kill(-1, SIGKILL)` run as that user reaches exactly the processes it left behind, however
//!   they detached (`setsid`, double fork), and the kernel makes it atomic against `fork`;
//! - `RLIMIT_NPROC` counts processes and threads per user, so Lambda's 1024 limit holds per
//!   environment;
//! - a private `HOME` and `TMPDIR` (mode 0700, owned by the id) instead of a shared `/tmp`;
//! - a memory cgroup limited to `memory_size`, where the broker may create cgroups (`cgroup`).
//!
//! The range is reserved for environments: every process found in it when the broker starts is
//! a leftover of an earlier broker (killed before it could clean up) and is killed.
//!
//! This is the workspace's one module with `unsafe` code: forking a child that switches user,
//! and the code run between `fork` and `exec` of an environment. Each block says why it is
//! sound; the rule for all of them is that a child forked from a multi-threaded process may
//! only make async-signal-safe calls (no allocation, no locks) until it execs or exits.
#![allow(unsafe_code)]

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use nix::libc;

use super::cgroup::{MemoryCgroup, MemoryCgroups};

/// Lambda's limit on processes and threads in one execution environment.
pub(super) const MAX_PROCESSES: u64 = 1024;

/// The user ids environments run as, and where their private directories live.
#[derive(Debug)]
pub struct Isolation {
    first_uid: u32,
    uid_count: u32,
    /// Ids not leased. The lowest is handed out first, so ids stay within the start of the
    /// range on a quiet broker (easier to read in `ps`).
    free: Mutex<BTreeSet<u32>>,
    /// Parent of every environment's private directory: owned by the broker, mode 0711, so an
    /// environment reaches its own directory but cannot list or create others.
    scratch: PathBuf,
    /// Where memory cgroups are made, or why they cannot be.
    memory: Result<MemoryCgroups, String>,
}

/// Why isolation cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    /// This process cannot switch to another user (not root, or missing `CAP_SETUID`,
    /// `CAP_SETGID` or `CAP_KILL`).
    #[error("cannot run processes as user {uid}: {source}")]
    SwitchUser {
        /// The id tried.
        uid: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The directory for environments' private directories cannot be prepared, or a private
    /// directory cannot be given to a user and emptied (missing `CAP_CHOWN` or
    /// `CAP_DAC_OVERRIDE`).
    #[error("cannot prepare {}: {source}", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Isolation {
    /// Sets up isolation with the ids `first_uid .. first_uid + uid_count` and private
    /// directories under `scratch` (created, or emptied if it exists).
    ///
    /// Checks that this process can switch users, and kills every process already running
    /// under an id of the range (see the module documentation).
    pub fn start(first_uid: u32, uid_count: u32, scratch: PathBuf) -> Result<Self, IsolationError> {
        run_as(first_uid, UserAction::Nothing).map_err(|source| IsolationError::SwitchUser {
            uid: first_uid,
            source,
        })?;
        let range = first_uid..first_uid.saturating_add(uid_count);
        for uid in users_with_processes(&range) {
            tracing::warn!(
                uid,
                "Killing the processes of an execution environment left by an earlier broker."
            );
            if let Err(source) = run_as(uid, UserAction::KillAll) {
                return Err(IsolationError::SwitchUser { uid, source });
            }
        }
        let memory = MemoryCgroups::discover();
        if let Ok(memory) = &memory {
            memory.sweep();
        }
        let scratch_error = |source| IsolationError::Scratch {
            path: scratch.clone(),
            source,
        };
        match fs::remove_dir_all(&scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(scratch_error(e)),
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&scratch)
            .map_err(scratch_error)?;
        // `mode` is masked by the umask; the directory must be exactly 0711.
        fs::set_permissions(&scratch, fs::Permissions::from_mode(0o711)).map_err(scratch_error)?;
        // What each lease does to a private directory, tried once: giving it to the user
        // (CAP_CHOWN), and later emptying it although only its user may enter it
        // (CAP_DAC_OVERRIDE).
        let probe = scratch.join("probe");
        prepare_home(&probe, first_uid)
            .and_then(|()| fs::write(probe.join("probe"), b""))
            .and_then(|()| fs::remove_dir_all(&probe))
            .map_err(scratch_error)?;
        Ok(Self {
            first_uid,
            uid_count,
            free: Mutex::new(range.collect()),
            scratch,
            memory,
        })
    }

    /// Whether `memory_size` is enforced, or why not.
    pub fn memory_limits(&self) -> Result<(), &str> {
        self.memory.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// The ids environments run as, for the start-up message.
    pub fn uids(&self) -> std::ops::Range<u32> {
        self.first_uid..self.first_uid.saturating_add(self.uid_count)
    }

    /// Leases an id and prepares its private directory and a memory cgroup of `memory_mib` MiB
    /// (where cgroups can be made). Fails when every id is in use (the range is smaller than
    /// the environments alive at once), or the directory or cgroup cannot be made.
    pub(super) fn lease(self: &Arc<Self>, memory_mib: u32) -> io::Result<UserLease> {
        let uid = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            free.pop_first()
        };
        let Some(uid) = uid else {
            return Err(io::Error::other(format!(
                "every user id of [isolation] ({}–{}) is in use; raise isolation.uid_count",
                self.first_uid,
                self.uids().end - 1
            )));
        };
        // From here the lease owns the id: dropping it on an error below returns the id.
        let mut lease = UserLease {
            uid,
            home: self.scratch.join(uid.to_string()),
            cgroup: None,
            isolation: self.clone(),
        };
        prepare_home(&lease.home, uid)?;
        if let Ok(memory) = &self.memory {
            lease.cgroup = Some(memory.create(uid, memory_mib)?);
        }
        Ok(lease)
    }

    fn give_back(&self, uid: u32) {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid);
    }
}

/// One environment's user id and private directory, for as long as its processes live.
///
/// Dropping it kills every process still running as the id, removes the directory and returns
/// the id to the range, in that order: an id is never handed out while a process of its last
/// holder is alive. Dropping blocks (a `fork` and a directory removal): drop it off the async
/// threads.
#[derive(Debug)]
pub(super) struct UserLease {
    uid: u32,
    home: PathBuf,
    cgroup: Option<MemoryCgroup>,
    isolation: Arc<Isolation>,
}

impl UserLease {
    /// The user (and group) id.
    pub(super) fn uid(&self) -> u32 {
        self.uid
    }

    /// The private directory: the environment's `HOME` and `TMPDIR`.
    pub(super) fn home(&self) -> &Path {
        &self.home
    }

    /// Makes `command`'s child, before `exec`: join the memory cgroup, switch to the lease's
    /// user, gain no new privileges (a setuid binary cannot give the function root), run at
    /// most [`MAX_PROCESSES`] processes and threads as that user, and die with the broker.
    pub(super) fn confine(&self, command: &mut tokio::process::Command, broker_pid: u32) {
        let uid = self.uid;
        // The file stays open in the broker until the child has exec'd (spawn waits for it);
        // it is close-on-exec, so the function never holds it.
        let procs = self
            .cgroup
            .as_ref()
            .map(|cgroup| cgroup.procs().as_raw_fd());
        // SAFETY: `confine_child` makes only async-signal-safe calls.
        unsafe {
            command.pre_exec(move || confine_child(uid, procs, broker_pid));
        }
    }
}

impl Drop for UserLease {
    fn drop(&mut self) {
        if let Err(e) = run_as(self.uid, UserAction::KillAll) {
            // The id stays out of the range: its processes may still run.
            tracing::error!(uid = self.uid, error = %e, "Cannot kill what an execution environment left behind; its user id is retired.");
            return;
        }
        // Empty now, so it can go.
        drop(self.cgroup.take());
        if let Err(e) = fs::remove_dir_all(&self.home) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.home.display(), error = %e, "Cannot remove an execution environment's directory.");
            }
        }
        self.isolation.give_back(self.uid);
    }
}

/// A fresh, empty directory owned by `uid`, mode 0700.
fn prepare_home(home: &Path, uid: u32) -> io::Result<()> {
    match fs::remove_dir_all(home) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs::DirBuilder::new().mode(0o700).create(home)?;
    std::os::unix::fs::chown(home, Some(uid), Some(uid))
}

/// What a forked child does once it runs as the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UserAction {
    /// Nothing: proves the switch works.
    Nothing,
    /// `kill(-1, SIGKILL)`: every process the user may signal, i.e. every process of the user.
    KillAll,
}

/// Forks a child that switches to `uid` and does `action`, and waits for it.
fn run_as(uid: u32, action: UserAction) -> io::Result<()> {
    // SAFETY: between `fork` and `_exit` the child makes only async-signal-safe system calls
    // (no allocation, no locks), as required after forking a multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw system calls in the single-threaded child; it never returns.
        unsafe {
            // The raw call changes this thread's ids only; glibc's `setuid` would try to
            // synchronise threads that do not exist in the child.
            if libc::syscall(libc::SYS_setuid, libc::c_long::from(uid)) != 0 {
                libc::_exit(1);
            }
            if action == UserAction::KillAll {
                // Linux spares the caller itself; ESRCH (nothing to kill) is success.
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; `status` is a valid pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }
}

/// The real user ids in `range` that have a process, from `/proc/<pid>/status`.
fn users_with_processes(range: &std::ops::Range<u32>) -> BTreeSet<u32> {
    let mut users = BTreeSet::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return users;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between listing and reading: skip it.
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(uid) = real_uid(&status) {
            if range.contains(&uid) {
                users.insert(uid);
            }
        }
    }
    users
}

/// The real uid from a `/proc/<pid>/status` text (`Uid:\treal\teffective\tsaved\tfs`).
fn real_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Makes `command`'s child die with the broker (see [`tie_to_broker`]).
pub(super) fn die_with_broker(command: &mut tokio::process::Command, broker_pid: u32) {
    // SAFETY: `tie_to_broker` makes only async-signal-safe calls.
    unsafe {
        command.pre_exec(move || tie_to_broker(broker_pid));
    }
}

/// See [`UserLease::confine`]. Runs between `fork` and `exec`: the cgroup is joined while the
/// child is still root, and the user switched here rather than by `Command::uid`, which would
/// switch before any `pre_exec` code runs.
fn confine_child(uid: u32, cgroup_procs: Option<RawFd>, broker_pid: u32) -> io::Result<()> {
    let check = |result: libc::c_long| {
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // SAFETY: plain system calls with constant or stack arguments; raw calls for the ids, as in
    // `run_as`.
    unsafe {
        if let Some(procs) = cgroup_procs {
            // "0" moves the writing process.
            if libc::write(procs, b"0".as_ptr().cast(), 1) != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        let id = libc::c_long::from(uid);
        check(libc::syscall(
            libc::SYS_setgroups,
            0,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        check(libc::syscall(libc::SYS_setgid, id))?;
        check(libc::syscall(libc::SYS_setuid, id))?;
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let limit = libc::rlimit {
            rlim_cur: MAX_PROCESSES,
            rlim_max: MAX_PROCESSES,
        };
        if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    tie_to_broker(broker_pid)
}

/// Asks the kernel to SIGKILL this (forked) process when the broker's thread that started it
/// exits; the broker's runtime threads live as long as the broker. Fails if the broker is
/// already gone.
///
/// Runs between `fork` and `exec`, after any change of user (which clears the setting).
fn tie_to_broker(broker_pid: u32) -> io::Result<()> {
    // SAFETY: plain system calls with constant arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The broker may have died between `fork` and the call above.
        if u32::try_from(libc::getppid()).ok() != Some(broker_pid) {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_uid_is_the_first_of_the_uid_line() {
        let status = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nUid:\t200001\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(real_uid(status), Some(200_001));
        assert_eq!(real_uid("Name:\tcat\n"), None);
        assert_eq!(real_uid("Uid:\tx\n"), None);
    }
}
