//! A real `envd serve` process for tests that need the binary (crash safety, several envd
//! on one database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Serve {
    /// `envd serve --listen 127.0.0.1:<port> --data-dir <data> <args…>`, aborting at
    /// `abort_at` (see envd::faults) when given.
    pub fn start(data: &Path, port: u16, args: &[&str], abort_at: Option<&str>) -> Serve {
        // envd takes its admin token from the data dir: the tests' own.
        let token_file = data.join("admin-token");
        if !token_file.exists() {
            std::fs::create_dir_all(data).unwrap();
            std::fs::write(&token_file, format!("{}\n", super::http::admin_token())).unwrap();
        }
        Self::spawn(data, port, args, abort_at)
    }

    /// [`Serve::start`] leaving the data dir as it is (a first start makes its token).
    pub fn spawn(data: &Path, port: u16, args: &[&str], abort_at: Option<&str>) -> Serve {
        // envd's log is kept beside its data, so a start that fails can say why;
        // ENVD_TEST_SERVE_LOG=1 shows it beside the test's output instead.
        let log = data.join("serve.log");
        let stderr = if std::env::var_os("ENVD_TEST_SERVE_LOG").is_some() {
            Stdio::inherit()
        } else {
            std::fs::create_dir_all(data).unwrap();
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("serve log opens");
            Stdio::from(file)
        };
        let mut cmd = Command::new(super::envd_bin());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env_remove("ENVD_ABORT_AT")
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(step) = abort_at {
            cmd.env("ENVD_ABORT_AT", step);
        }
        Serve {
            child: cmd.spawn().expect("envd serve starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to die at its abort point.
    pub fn wait_abort(&mut self) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(!status.success(), "envd exited cleanly instead of aborting");
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "envd never reached its abort step"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// Waits until `/healthz` answers; if it never does, fails with the end of envd's log.
    pub async fn up(&mut self) {
        let t = Instant::now();
        while reqwest::get(format!("{}/healthz", self.base))
            .await
            .is_err()
        {
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() || t.elapsed() > Duration::from_secs(60) {
                panic!(
                    "envd serve did not come up ({}); its log ends:\n{}",
                    exited.map_or("still running after 60 s".into(), |s| s.to_string()),
                    log_tail(&self.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
