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
