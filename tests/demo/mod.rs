//! The demo binary (`allocscope-demo`) as a child process for the tests
//! that point real tools at it: started on a free loopback port, its URL
//! read from its stdout, killed (and reaped) when the guard is dropped, on
//! every path, panics included.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running demo; killed on drop.
pub struct Demo {
    child: Child,
    /// `http://127.0.0.1:PORT/` as the demo printed it.
    pub url: String,
    pub addr: SocketAddr,
    /// Everything the demo printed on stdout so far (for failure messages).
    pub output: Arc<Mutex<String>>,
}

impl Demo {
    /// Starts the demo with `env` added (and `ALLOCSCOPE_ADDR=127.0.0.1:0`,
    /// no periodic log line, a hard stop after `max_seconds`), in `dir` so
    /// that no `config/allocscope.toml` of the checkout is read. Waits at
    /// most 30 s for the URL.
    pub fn start(dir: &Path, env: &[(&str, &str)], max_seconds: u64) -> Demo {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_allocscope-demo"));
        for (k, _) in std::env::vars() {
            if k.starts_with("ALLOCSCOPE_") {
                cmd.env_remove(&k);
            }
        }
        cmd.current_dir(dir)
            .env("ALLOCSCOPE_ADDR", "127.0.0.1:0")
            .env("ALLOCSCOPE_LOG_INTERVAL", "0")
            .env("ALLOCSCOPE_DEMO_SECONDS", max_seconds.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn allocscope-demo");
        let stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = output.clone();
        // Reads every line (so that the demo never blocks on a full pipe)
        // and hands over the landing URL.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("landing page:") {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut o = out.lock().unwrap();
                if o.len() < 64 * 1024 {
                    o.push_str(&line);
                    o.push('\n');
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the demo printed no landing URL ({e}); stdout:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("demo URL {url:?}: {e}"));
        Demo {
            child,
            url,
            addr,
            output,
        }
    }

    /// Whether the demo is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "allocscope-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
