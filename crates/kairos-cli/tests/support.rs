#![allow(dead_code, clippy::unwrap_used)]
//! Runs real `kairos serve` child processes for end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WRITE_KEY: &str = "wk_e2e_test";
pub const ADMIN: &str = "e2e-admin-token";

/// A `kairos serve` child; killed with SIGKILL when dropped (also on panic).
pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    pub async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, None).await
    }

    /// With a TOML configuration file as well.
    pub async fn start_with(data_dir: &Path, config: Option<&Path>) -> Self {
        let port = free_port();
        let log = data_dir.with_extension(format!("{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .args(
                config
                    .map(|c| vec!["--config".into(), c.as_os_str().to_owned()])
                    .unwrap_or_default(),
            )
            .env("KAIROS_WRITE_KEY", WRITE_KEY)
            .env("KAIROS_ADMIN_TOKEN", ADMIN)
            .env("KAIROS_LOG", "warn")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let s = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        s.wait_healthy().await;
        s
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not become healthy; log:\n{}", self.log_tail());
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// GET with the admin token; the JSON body.
    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Every messageId in the event log, in arrival order.
    pub async fn logged_message_ids(&self) -> Vec<String> {
        let mut after = 0u64;
        let mut ids = Vec::new();
        loop {
            let r = self
                .admin_get(&format!("/v1/events?after={after}&limit=10000"))
                .await;
            for e in r["events"].as_array().unwrap() {
                ids.push(e["messageId"].as_str().unwrap().to_string());
            }
            match r["next"].as_u64() {
                Some(n) => after = n,
                None => return ids,
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `kairos ARGS` (with `--data-dir` after every command but `simulate`); returns
/// whether it succeeded and everything it printed.
pub fn kairos(args: &[&str], data_dir: &Path) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kairos"));
    cmd.args(args);
    if args[0] != "simulate" {
        cmd.arg("--data-dir").arg(data_dir);
    }
    let out = cmd.env("KAIROS_LOG", "warn").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
