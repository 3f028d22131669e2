//! The README's first command, `./run`, on a machine that lacks a build
//! prerequisite (issue 18): it names what is missing and what it would run
//! to install it, or stops with one sentence, before any cargo build.
//! Each test gives the script a `PATH` of its own, with stand-ins for the
//! package manager and cargo that leave a mark when they are run.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A directory for `PATH` with the real tools the script uses and
/// stand-ins for `cargo`, `cc` and, when asked, `apt-get` and `sudo`.
struct FakePath {
    dir: PathBuf,
}

impl FakePath {
    fn new(name: &str, package_manager: bool) -> Self {
        let dir = std::env::temp_dir().join(format!("mcpgw-run-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for tool in ["bash", "dirname", "id", "tr", "sed", "env"] {
            let real = which(tool);
            symlink(real, dir.join(tool)).unwrap();
        }
        let mut stand_ins = vec!["cargo", "cc"];
        if package_manager {
            stand_ins.extend(["apt-get", "sudo"]);
        }
        for tool in stand_ins {
            let marker = dir.join(format!("{tool}.ran"));
            // `sudo` runs what it is given, as the real one would.
            let then = if tool == "sudo" { "exec \"$@\"\n" } else { "" };
            let script = format!("#!/bin/bash\necho \"$@\" >> '{}'\n{then}", marker.display());
            let path = dir.join(tool);
            std::fs::write(&path, script).unwrap();
            Command::new("/bin/chmod")
                .arg("+x")
                .arg(&path)
                .status()
                .unwrap();
        }
        Self { dir }
    }

    fn ran(&self, tool: &str) -> bool {
        self.dir.join(format!("{tool}.ran")).exists()
    }

    fn run(&self, args: &[&str], dry: bool) -> Output {
        let mut cmd = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("run"));
        cmd.args(args).env_clear().env("PATH", &self.dir);
        if dry {
            cmd.env("MCPGW_RUN_DRY", "1");
        }
        cmd.output().unwrap()
    }
}

impl Drop for FakePath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(tool: &str) -> PathBuf {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{tool} not found in /usr/bin or /bin"))
}

#[test]
fn missing_cmake_is_named_with_the_command_that_installs_it() {
    let path = FakePath::new("dry", true);
    let out = path.run(&["demo"], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("missing: cmake;"), "{stderr}");
    assert!(
        stderr.contains("apt-get install -y -qq cmake"),
        "names the install command: {stderr}"
    );
    assert!(
        stderr.contains("would run: cargo run --release --locked --bin mcp-oauth-gateway -- demo"),
        "{stderr}"
    );
    assert!(
        !path.ran("apt-get") && !path.ran("cargo"),
        "a dry run runs nothing"
    );
}

#[test]
fn missing_cmake_is_installed_before_the_build() {
    let path = FakePath::new("install", true);
    let out = path.run(&["demo"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(path.ran("apt-get"), "the package manager was run: {stderr}");
    assert!(path.ran("cargo"), "then the build: {stderr}");
}

#[test]
fn without_a_package_manager_it_stops_with_one_sentence_and_builds_nothing() {
    let path = FakePath::new("stop", false);
    let out = path.run(&["demo"], false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "run: missing: cmake. Install them with your package manager, then run ./run demo again."
    );
    assert!(!path.ran("cargo"), "no build was started");
}

#[test]
fn test_command_also_checks_what_the_tests_drive() {
    let path = FakePath::new("test", true);
    let out = path.run(&["test"], true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for package in ["cmake", "npm", "python3", "chromium", "prometheus"] {
        assert!(
            stderr.contains(package),
            "{package} named as missing: {stderr}"
        );
    }
    assert!(stderr.contains("would run: cargo test"), "{stderr}");
}
