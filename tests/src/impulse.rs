//! Running the real `impulse` binary: build it once, start it with a config, stop it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::wait::{eventually, wait_for};

/// How long `impulse run` may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The `impulse` binary, built by this function the first time it is needed (in the same
/// profile and target directory as the running test), or `IMPULSE_BIN` when set.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Ok(path) = std::env::var("IMPULSE_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<test> → target/<profile>/impulse
        let exe = std::env::current_exe().expect("the test knows its own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "impulse-broker",
            "--bin",
            "impulse",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the impulse binary failed");
        profile_dir.join("impulse")
    })
}

/// Runs `impulse ARGS…` to completion.
pub fn cli(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .output()
        .expect("impulse runs")
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound socket has an address")
}

/// Where an `impulse` instance keeps its files and listens; reusable across restarts.
#[derive(Debug)]
pub struct Instance {
    /// The directory holding the config file, the log and the data directory.
    pub dir: tempfile::TempDir,
    /// The trigger listener.
    pub listen: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl Instance {
    /// A fresh directory and two free ports.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            listen: free_addr(),
            admin: free_addr(),
        }
    }

    /// The data directory (`queue.data_dir`).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The config file `start` writes.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("impulse.toml")
    }
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

/// The isolation mode brokers started by the harness get unless a test's `env` says otherwise:
/// off. Isolated environments run as other users, who must be able to read the worker
/// binaries and Python venvs, which live in the workspace; a workspace in a directory other
/// users cannot enter (such as `/root`) would fail every process test for a reason that is not
/// theirs. `tests/tests/isolation.rs` runs isolated brokers with workers it places in a
/// directory everyone can read.
pub const ISOLATION_MODE: (&str, &str) = ("IMPULSE_ISOLATION_MODE", "off");

/// A running `impulse run`, killed on drop.
#[derive(Debug)]
pub struct Impulse {
    child: Option<Child>,
    /// The trigger listener (HTTP triggers and the Invoke API).
    pub listen: SocketAddr,
    /// The admin listener (health, readiness, metrics).
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Impulse {
    /// Starts `impulse run` with `config` (TOML) in a fresh directory and waits until
    /// `/readyz` answers 200.
    ///
    /// `[server]` and `[queue]` (the embedded backend in the fresh directory) are added by this
    /// function: `config` must not contain them. Tests that need another queue, or a restart on
    /// the same data, use [`Impulse::start_in`].
    pub async fn start(config: &str) -> Self {
        Self::start_with_env(config, &[]).await
    }

    /// [`Impulse::start`] with variables added to the process's environment (`RUST_LOG`, which
    /// is `info` otherwise, and `IMPULSE_ISOLATION_MODE`, see [`ISOLATION_MODE`], among them).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let instance = Instance::new();
        let data_dir = instance.data_dir();
        let config = format!("[queue]\ndata_dir = {data_dir:?}\n\n{config}");
        let mut impulse = Self::start_in_with_env(&instance, &config, env).await;
        impulse._dir = Some(instance.dir);
        impulse
    }

    /// Starts `impulse run` for `instance` (its ports; the data directory is for `config` to
    /// use) and waits until ready. `[server]` is added: do not include it in `config`.
    pub async fn start_in(instance: &Instance, config: &str) -> Self {
        Self::start_in_with_env(instance, config, &[]).await
    }

    /// [`Impulse::start_in`] with variables added to the process's environment.
    pub async fn start_in_with_env(
        instance: &Instance,
        config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let (listen, admin) = (instance.listen, instance.admin);
        let text =
            format!("[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n\n{config}");
        let path = instance.config_path();
        std::fs::write(&path, text).expect("write config");
        let log = instance
            .dir
            .path()
            .join(format!("impulse-{}.log", unique()));
        let log_file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(binary())
            .arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--shutdown-grace")
            .arg("10s")
            .env("RUST_LOG", "info")
            .env(ISOLATION_MODE.0, ISOLATION_MODE.1)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn impulse");
        let mut impulse = Self {
            child: Some(child),
            listen,
            admin,
            log,
            _dir: None,
        };
        impulse.wait_ready().await;
        impulse
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.admin);
        let exited = eventually("impulse to be ready", READY_TIMEOUT, async || {
            // An exit is final: stop waiting and report it.
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Ok(Some(status));
            }
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => Ok(None),
                Ok(response) => Err(format!("/readyz answered {}", response.status())),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
        if let Some(status) = exited {
            panic!(
                "impulse exited with {status} before it was ready:\n{}",
                self.logs()
            );
        }
    }

    /// The URL of `path` on the trigger listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// The URL of `path` on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The value of `series` (its name and labels exactly as exported) on `/metrics`; `None`
    /// when the series is not exported.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the /metrics body");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        wait_for("impulse to exit", timeout, || {
            child.try_wait().expect("try_wait")
        })
        .await
    }
}

impl Drop for Impulse {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine; the process must not outlive the test.
            child.kill().ok();
            child.wait().ok();
        }
    }
}
