//! A throwaway PostgreSQL cluster for tests (Debian's `postgresql`
//! package, which `./run test` installs): `initdb` in a temporary
//! directory (as the `postgres` user when the tests run as root, which
//! PostgreSQL refuses), started on a free loopback port with password
//! authentication. One cluster per test process, each test in a database
//! of its own; a watchdog stops the cluster and removes its directory once
//! the test process has exited.
//!
//! Used by the store's unit tests too (`src/store/tests.rs` includes this
//! file), so it depends on nothing else of `tests/common`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The cluster's superuser and its password.
const USER: &str = "gateway";
pub const PASSWORD: &str = "a-password-for-the-test-cluster";

/// A running cluster.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// The OS user it runs as, when not the test's own.
    os_user: Option<&'static str>,
    pub port: u16,
}

static CLUSTER: OnceLock<Postgres> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The test process's cluster, started on first use.
pub fn cluster() -> &'static Postgres {
    CLUSTER.get_or_init(Postgres::start)
}

/// A new, empty database on the test process's cluster; its URL.
pub fn fresh_database() -> String {
    let pg = cluster();
    let name = format!(
        "test_{}_{}",
        std::process::id(),
        DATABASES.fetch_add(1, Ordering::Relaxed)
    );
    pg.psql(&format!("CREATE DATABASE {name}"));
    pg.url(&name)
}

impl Postgres {
    /// A cluster of its own (for a test that stops and starts it; the
    /// others share [`cluster`]).
    pub fn start() -> Self {
        let bin = bin_dir();
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcpgw-pg-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let os_user = is_root().then_some("postgres");
        if let Some(user) = os_user {
            run("chown", &[&format!("{user}:"), dir.to_str().unwrap()]);
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pg = Self {
            bin,
            dir,
            os_user,
            port,
        };
        let pwfile = pg.dir.join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some(user) = os_user {
            run("chown", &[&format!("{user}:"), pwfile.to_str().unwrap()]);
        }
        pg.as_owner(
            "initdb",
            &[
                "-D",
                pg.data().to_str().unwrap(),
                "-U",
                USER,
                "--pwfile",
                pwfile.to_str().unwrap(),
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.start_server();
        pg.watch_for_exit();
        pg
    }

    /// Starts (or restarts) the server.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        self.as_owner(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-D",
                self.data().to_str().unwrap(),
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "-o",
                &options,
            ],
        );
    }

    /// Stops the server at once (as a crash or an outage would).
    pub fn stop_server(&self) {
        self.as_owner(
            "pg_ctl",
            &[
                "stop",
                "-m",
                "immediate",
                "-D",
                self.data().to_str().unwrap(),
            ],
        );
    }

    /// The URL of database `db`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs one SQL statement as the superuser.
    pub fn psql(&self, sql: &str) {
        self.psql_in("postgres", sql);
    }

    /// Runs SQL as the superuser in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) {
        let status = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "psql: {sql}");
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs a PostgreSQL program as the cluster's owner.
    fn as_owner(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = match self.os_user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&path);
                c
            }
            None => Command::new(&path),
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Leaves behind a watchdog that stops the cluster and removes its
    /// directory when this test process has exited.
    fn watch_for_exit(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match self.os_user {
            Some(user) => format!("runuser -u {user} -- {}", pg_ctl.display()),
            None => pg_ctl.display().to_string(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} stop -m immediate -D {data} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            data = self.data().display(),
            dir = self.dir.display(),
        );
        // `setsid -f` leaves it running in a session of its own and returns.
        let status = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the cluster's watchdog did not start");
    }
}

/// Where PostgreSQL's programs are: the directory `initdb` on `PATH`
/// really is in (links followed: `psql` and `pg_ctl` are beside it), or
/// Debian's versioned directory (the newest version).
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .filter_map(|d| std::fs::canonicalize(d.join("initdb")).ok())
            .find_map(|initdb| Some(initdb.parent()?.to_path_buf()))
    });
    if let Some(dir) = on_path.filter(|d| d.join("psql").is_file()) {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    versions.retain(|d| d.join("initdb").is_file());
    versions.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions
        .pop()
        .expect("PostgreSQL is not installed: `./run test` installs Debian's `postgresql` package")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap();
    assert!(status.success(), "{program} {args:?}");
}
