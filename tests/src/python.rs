//! Python virtual environments for tests that drive real Python clients (the `awslambdaric`
//! runtime client, boto3), kept under `<workspace>/.services/` between runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The Python of `.services/<name>` with `requirements` (pinned pip specifiers) installed,
/// creating it on first use. A file lock serialises test binaries running at once; a marker
/// file records a finished install, so a changed pin rebuilds the venv.
pub fn venv(name: &str, requirements: &[&str]) -> PathBuf {
    let services = workspace_root().join(".services");
    std::fs::create_dir_all(&services).expect("create .services");
    let lock = File::create(services.join(format!("{name}.lock"))).expect("create the venv lock");
    lock.lock().expect("lock the venv");
    let venv = services.join(name);
    let python = venv.join("bin/python");
    let marker = venv.join(".impulse-installed");
    let wanted = requirements.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) && python.exists() {
        return python;
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove an unfinished venv");
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (on Debian's system Python this needs `apt-get install python3-venv`)",
    );
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(requirements),
        &format!("pip install {} (needs PyPI)", requirements.join(" ")),
    );
    std::fs::write(&marker, wanted).expect("write the venv marker");
    python
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// boto3, pinned so that the SDK's requests (and signatures) under test do not change between
/// runs.
pub const BOTO3: &str = "boto3==1.44.18";

/// Runs `tests/workers/python/<script>` with boto3 against `endpoint`, signed with the access
/// key `(key_id, secret)`, with `args` added; its output, which must be one JSON document.
///
/// # Panics
///
/// When the venv cannot be made, the script cannot run, or its output is not JSON (the panic
/// shows its output and errors).
pub async fn boto3_script(
    script: &str,
    endpoint: &str,
    (key_id, secret): (&str, &str),
    args: &[&str],
) -> serde_json::Value {
    let python = tokio::task::spawn_blocking(|| venv("boto3-venv", &[BOTO3]))
        .await
        .expect("venv");
    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/workers/python").join(script))
        .args(["--endpoint", endpoint, "--access-key-id", key_id])
        .args(["--secret-access-key", secret])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script}'s output is not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}
