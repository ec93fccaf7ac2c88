//! `impulse run` started from a config file the test wrote, with its output kept, for tests
//! that need what [`crate::impulse::Impulse`] does not give: TLS listeners (its readiness probe
//! is plain HTTP), a chosen log level, or stdout.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::impulse::{binary, ISOLATION_MODE};
use crate::wait::{eventually, wait_for};

/// A running `impulse run`, killed on drop.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    /// Writes `config` to `dir/impulse.toml` and runs it with `RUST_LOG=log_level` and `env`
    /// (isolation off unless `env` sets it: see [`ISOLATION_MODE`]); stdout and stderr go to
    /// files in `dir`.
    ///
    /// # Panics
    ///
    /// When the files cannot be written or the binary cannot be started.
    pub fn start(dir: &Path, config: &str, log_level: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join("impulse.toml");
        std::fs::write(&path, config).expect("write config");
        let (stdout, stderr) = (dir.join("stdout.log"), dir.join("stderr.log"));
        let child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", log_level)
            .env(ISOLATION_MODE.0, ISOLATION_MODE.1)
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(&stdout).expect("create stdout"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr"))
            .spawn()
            .expect("spawn impulse");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Everything the process printed so far, stdout then stderr.
    pub fn output(&self) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }

    /// Waits until `url` answers 2xx through `client`.
    ///
    /// # Panics
    ///
    /// When the process exits first, or 30 s pass; with its output.
    pub async fn wait_ready(&mut self, client: &reqwest::Client, url: &str) {
        let result = eventually("impulse to be ready", Duration::from_secs(30), async || {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Ok(Some(status));
            }
            match client.get(url).send().await {
                Ok(response) if response.status().is_success() => Ok(None),
                Ok(response) => Err(format!("{url} answered {}", response.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
        match result {
            Ok(None) => {}
            Ok(Some(status)) => panic!("impulse exited with {status}:\n{}", self.output()),
            Err(e) => panic!("{e}\n{}", self.output()),
        }
    }

    /// Waits until the output contains `needle`.
    ///
    /// # Panics
    ///
    /// When it does not within 20 s; with the output.
    pub async fn wait_for_output(&self, needle: &str) {
        eventually(
            &format!("{needle:?} in the log"),
            Duration::from_secs(20),
            async || {
                if self.output().contains(needle) {
                    Ok(())
                } else {
                    Err("not yet".to_owned())
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.output()));
    }

    /// SIGTERM, then the exit; the output is complete afterwards.
    ///
    /// # Panics
    ///
    /// When the process does not exit with 0 within 30 s.
    pub async fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
        let child = &mut self.child;
        let exit = wait_for("impulse to exit", Duration::from_secs(30), || {
            child.try_wait().expect("try_wait")
        })
        .await;
        assert!(
            exit.success(),
            "impulse exited with {exit}:\n{}",
            self.output()
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Already exited is fine; the process must not outlive the test.
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
