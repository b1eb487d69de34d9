//! The real services the cluster tests use: a fresh database on the machine's PostgreSQL
//! (127.0.0.1:5432), and private PostgreSQL and NATS servers that a test may stop and start
//! (so an outage test never disturbs the shared ones).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Row};

/// The shared PostgreSQL (`XYN_TEST_DATABASE_URL`, default the local `test` database).
pub fn base_url() -> String {
    std::env::var("XYN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_db(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{db}"),
        None => format!("{url}/{db}"),
    }
}

pub async fn connect(url: &str) -> Client {
    let (c, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url}: {e} (see .ci/run)"));
    tokio::spawn(conn);
    c
}

fn epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A database of its own on the shared PostgreSQL, dropped at the end.
pub struct TestDb {
    pub url: String,
    name: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let admin = connect(&base_url()).await;
        // Databases left by killed test runs (older than 15 minutes) go first.
        for r in admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'xyn\\_e2e\\_%'",
                &[],
            )
            .await
            .unwrap()
        {
            let name: String = r.get(0);
            let born: u64 = name
                .split('_')
                .nth(2)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if born + 900 < epoch() {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        }
        let name = format!(
            "xyn_e2e_{}_{}",
            epoch(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: with_db(&base_url(), &name),
            name,
        }
    }

    pub async fn query(&self, sql: &str) -> Vec<Row> {
        let c = connect(&self.url).await;
        c.query(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.query(sql).await[0].get::<_, i64>(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (base_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok((c, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pg_bin(name: &str) -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(base)
        .unwrap_or_else(|e| panic!("PostgreSQL server binaries under {}: {e}", base.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions.pop().map(|v| v.join("bin").join(name)).unwrap()
}

/// Runs a command as the `postgres` user (the server refuses to run as root).
fn as_postgres(cmd: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}{}",
        cmd.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A PostgreSQL server of this test's own, on a free port, that the test can stop and start.
pub struct PrivatePg {
    dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let dir = tempfile::tempdir().unwrap();
        let uid: u32 = String::from_utf8(
            Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
        let data = dir.path().join("data");
        as_postgres(
            &pg_bin("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let port = free_port();
        let pg = PrivatePg {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
            port,
        };
        pg.up();
        pg
    }

    /// Starts the server (again) and waits until it answers.
    pub fn up(&self) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.path().display()
        );
        as_postgres(
            &pg_bin("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                self.dir.path().join("log").to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server at once (`-m fast`: connections are cut).
    pub fn down(&self) {
        let data = self.dir.path().join("data");
        as_postgres(
            &pg_bin("pg_ctl"),
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A NATS server with JetStream of this test's own, that the test can stop and start.
pub struct PrivateNats {
    dir: tempfile::TempDir,
    pub port: u16,
    pub url: String,
    child: Option<Child>,
}

impl PrivateNats {
    pub fn start() -> PrivateNats {
        let port = free_port();
        let mut n = PrivateNats {
            dir: tempfile::tempdir().unwrap(),
            url: format!("nats://127.0.0.1:{port}"),
            port,
            child: None,
        };
        n.up();
        n
    }

    pub fn up(&mut self) {
        let bin = if Path::new("/usr/sbin/nats-server").exists() {
            "/usr/sbin/nats-server"
        } else {
            "nats-server"
        };
        let child = Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
                self.dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.down();
    }
}
