//! A side of a benchmark in a process of its own (`impulse run`, or a raw loop started as a
//! child of the bench), so that its CPU time is read apart from the target's and the bench's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// A side's process, killed on drop.
#[derive(Debug)]
pub struct SideProcess {
    child: Child,
    log: PathBuf,
    /// `impulse run`'s `server.listen`; unset for other processes.
    listen: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

impl SideProcess {
    /// Starts `command` with its stderr in a log in `dir`, which lives as long as the process.
    pub fn spawn(
        dir: tempfile::TempDir,
        command: &mut Command,
        what: &str,
    ) -> anyhow::Result<Self> {
        let log = dir.path().join("side.log");
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Self {
            child,
            log,
            listen: None,
            _dir: dir,
        })
    }

    /// Writes `config` (plus `[server]` on free ports and `[queue]` in a fresh directory), starts
    /// `impulse run` and waits until `/readyz` answers 200.
    pub async fn impulse(binary: &Path, config: &str) -> anyhow::Result<Self> {
        Self::impulse_with_queue(binary, "", config).await
    }

    /// [`SideProcess::impulse`] with `queue` appended to the `[queue]` table (for example
    /// `backend = "redis"` and a `[queue.redis]` table).
    pub async fn impulse_with_queue(
        binary: &Path,
        queue: &str,
        config: &str,
    ) -> anyhow::Result<Self> {
        let dir = work_dir("impulse-bench-")?;
        let listen = free_addr()?;
        let admin = free_addr()?;
        let data_dir = dir.path().join("data");
        let text = format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n\n[queue]\ndata_dir = {data_dir:?}\n{queue}\n\n{config}"
        );
        let path = dir.path().join("impulse.toml");
        std::fs::write(&path, text)?;
        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info");
        let mut process = Self::spawn(dir, &mut command, &binary.display().to_string())?;
        process.listen = Some(listen);
        let client = reqwest::Client::new();
        let url = format!("http://{admin}/readyz");
        let started = Instant::now();
        loop {
            if let Some(status) = process.child.try_wait()? {
                anyhow::bail!(
                    "impulse exited with {status} before it was ready:\n{}",
                    process.log_tail(40)
                );
            }
            if let Ok(response) = client.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(process);
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!(
                    "impulse was not ready within 30 s:\n{}",
                    process.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where `impulse run` serves triggers and the Invoke API (`server.listen`).
    ///
    /// # Panics
    ///
    /// For a process not started by [`SideProcess::impulse`].
    pub fn listen(&self) -> std::net::SocketAddr {
        self.listen.expect("an impulse process")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    ///
    /// # Errors
    ///
    /// The status cannot be read.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// SIGTERM, then waits for the exit.
    pub async fn terminate(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "the process did not exit within {timeout:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` of the process's stderr.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for SideProcess {
    fn drop(&mut self) {
        // Already exited is fine; the process must not outlive the bench.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A fresh directory under `target/` for one side's files, removed when it drops.
pub fn work_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(crate::workspace_root().join("target"))
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
