//! Docker's Python SDK as a second client (issue 23): `tests/sdk/check_sdk.py` calls every
//! endpoint Strata serves the way the SDK does and checks the answers, once with the
//! negotiated API version and once pinned to 1.41 (what older SDKs send), so a regression in
//! the wire format shows up without the Go CLI. The SDK lives in a virtual environment that
//! scripts/setup.sh makes (`STRATA_SDK_VENV` points at another).

#[path = "common/stratad.rs"]
mod stratad;

use std::path::PathBuf;
use std::process::Command;

use stratad::Stratad;

fn sdk_python() -> PathBuf {
    let venv = std::env::var_os("STRATA_SDK_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/strata/sdk-venv"));
    let python = venv.join("bin/python");
    let has_sdk = Command::new(&python)
        .args(["-c", "import docker"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "Docker's Python SDK is not installed in {} (scripts/setup.sh makes it)",
        venv.display()
    );
    python
}

fn run_checks(d: &Stratad, api_version: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/check_sdk.py");
    let out = Command::new(sdk_python())
        .arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", d.sock().display()))
        .env("API_VERSION", api_version)
        .output()
        .expect("run the SDK checks");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK checks at API {api_version} failed:\n{report}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
}

#[test]
fn the_python_sdk_drives_every_served_endpoint() {
    let d = Stratad::start(None);
    d.load_busybox();
    run_checks(&d, "auto");
    run_checks(&d, "1.41");
}
