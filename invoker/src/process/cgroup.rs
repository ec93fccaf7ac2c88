//! `memory_size` as a hard limit: a memory cgroup per isolated environment.
//!
//! Lambda kills an environment that outgrows its memory; so does the kernel's OOM killer for a
//! process in a cgroup over its limit. Each isolated environment gets a cgroup of its own below
//! the broker's, limited to `memory_size` MiB with no swap, which its first process joins
//! before it runs any of the function's code (`isolation::confine_child`): nothing the
//! function starts can be outside it.
//!
//! Both cgroup layouts are used as found: v2 (unified, `/sys/fs/cgroup`, where the broker's
//! cgroup must be able to enable the `memory` controller for children, which it cannot while
//! it holds processes itself unless it is a namespace's root) and v1 (`/sys/fs/cgroup/memory`).
//! Where neither can be written, `memory_size` is not enforced, and the broker says so at start.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The prefix of every environment's cgroup, so leftovers of an earlier broker are recognised.
const PREFIX: &str = "impulse-env-";

/// Where environments' memory cgroups are made.
#[derive(Debug)]
pub(super) struct MemoryCgroups {
    /// The broker's own memory cgroup directory.
    parent: PathBuf,
    version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl MemoryCgroups {
    /// Finds the broker's memory cgroup and checks that children can be made in it; the reason
    /// when they cannot.
    pub(super) fn discover() -> Result<Self, String> {
        let membership = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let root = Path::new("/sys/fs/cgroup");
        let found = if root.join("cgroup.controllers").exists() {
            let path = own_path(&membership, Version::V2)
                .ok_or("no cgroup v2 entry in /proc/self/cgroup")?;
            let parent = root.join(path.trim_start_matches('/'));
            enable_memory_for_children(&parent)?;
            Self {
                parent,
                version: Version::V2,
            }
        } else {
            let path = own_path(&membership, Version::V1)
                .ok_or("no memory controller (cgroup v1 or v2) in /proc/self/cgroup")?;
            Self {
                parent: root.join("memory").join(path.trim_start_matches('/')),
                version: Version::V1,
            }
        };
        let probe = found.parent.join(format!("{PREFIX}probe"));
        fs::create_dir(&probe)
            .and_then(|()| fs::remove_dir(&probe))
            .map_err(|e| format!("cannot create cgroups in {}: {e}", found.parent.display()))?;
        Ok(found)
    }

    /// Removes the cgroups an earlier broker left (their processes are killed by then).
    pub(super) fn sweep(&self) {
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                remove(&entry.path());
            }
        }
    }

    /// A fresh cgroup for the environment of `uid`, limited to `memory_mib` MiB.
    pub(super) fn create(&self, uid: u32, memory_mib: u32) -> io::Result<MemoryCgroup> {
        let dir = self.parent.join(format!("{PREFIX}{uid}"));
        if dir.exists() {
            remove(&dir);
        }
        fs::create_dir(&dir)?;
        let cgroup = MemoryCgroup {
            procs: OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?,
            dir,
        };
        let bytes = (u64::from(memory_mib) << 20).to_string();
        match self.version {
            Version::V1 => {
                fs::write(cgroup.dir.join("memory.limit_in_bytes"), &bytes)?;
                // Memory plus swap, where swap accounting is on: no swap beyond the limit.
                let memsw = cgroup.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    fs::write(memsw, &bytes)?;
                }
            }
            Version::V2 => {
                fs::write(cgroup.dir.join("memory.max"), &bytes)?;
                let swap = cgroup.dir.join("memory.swap.max");
                if swap.exists() {
                    fs::write(swap, "0")?;
                }
            }
        }
        Ok(cgroup)
    }
}

/// One environment's memory cgroup. Dropping it removes the cgroup once its processes are
/// gone (they are killed first, by the environment's user lease).
#[derive(Debug)]
pub(super) struct MemoryCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened by the broker: the environment's first process writes `0` to it
    /// (itself) while it still runs as root.
    procs: File,
}

impl MemoryCgroup {
    /// The open `cgroup.procs` file.
    pub(super) fn procs(&self) -> &File {
        &self.procs
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        remove(&self.dir);
    }
}

/// Removes a cgroup directory, waiting briefly for killed processes to leave it.
fn remove(dir: &Path) {
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            // Busy: a killed process has not finished exiting.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "Cannot remove an execution environment's cgroup; the next start retries.");
}

/// The broker's cgroup path from `/proc/self/cgroup` (`hierarchy:controllers:path` lines).
fn own_path(membership: &str, version: Version) -> Option<&str> {
    membership.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (hierarchy, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match version {
            Version::V2 => hierarchy == "0" && controllers.is_empty(),
            Version::V1 => controllers.split(',').any(|c| c == "memory"),
        };
        matches.then_some(path)
    })
}

/// Makes the `memory` controller available to `parent`'s children (cgroup v2).
fn enable_memory_for_children(parent: &Path) -> Result<(), String> {
    let enabled = fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "memory") {
        return Ok(());
    }
    fs::write(parent.join("cgroup.subtree_control"), "+memory").map_err(|e| {
        format!(
            "cannot enable the memory controller below {} ({e}); a cgroup that holds processes \
             can only do so as a namespace's root: run the broker in a cgroup of its own with \
             the memory controller delegated",
            parent.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_s_cgroup_is_found_in_either_layout() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/ac38\n3:cpuset:/\n0::/\n";
        assert_eq!(own_path(hybrid, Version::V1), Some("/process_api/ac38"));
        assert_eq!(own_path(hybrid, Version::V2), Some("/"));
        let joined = "5:cpu,memory:/kubepods/pod1\n";
        assert_eq!(own_path(joined, Version::V1), Some("/kubepods/pod1"));
        assert_eq!(
            own_path("0::/system.slice/impulse.service\n", Version::V1),
            None
        );
        assert_eq!(
            own_path("0::/system.slice/impulse.service\n", Version::V2),
            Some("/system.slice/impulse.service")
        );
    }
}
