//! Runs the `mirage` binary: servers as child processes, and the
//! maintenance commands.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

pub const BINARY: &str = env!("CARGO_BIN_EXE_mirage");

/// A `mirage` server in a child process; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub client: Client,
}

impl Server {
    /// Starts the server on a free loopback port over `data_dir`, with
    /// `extra` flags, and waits (at most 30 s) until it listens. Rate
    /// limits are off: these tests write as fast as they can from one address.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_with(data_dir, extra, |_| {})
    }

    /// Like `start`, after letting the test adjust the command.
    pub fn start_with(
        data_dir: &Path,
        extra: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let mut command = Command::new(BINARY);
        adjust(&mut command);
        let mut child = command
            .args([
                "--listen",
                "127.0.0.1:0",
                "--log",
                "info",
                "--rate-limits",
                "off",
            ])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mirage starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (addr_tx, addr_rx) = mpsc::channel();
        // Keeps reading after the address, so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = strip_ansi(&line);
                if line.contains("mirage listening")
                    && let Some(addr) = field(&line, "addr=")
                {
                    let _ = addr_tx.send(addr);
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address within 30 s");
        Server {
            child,
            base: format!("http://{addr}"),
            client: Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// SIGKILL: no graceful shutdown, nothing flushed.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> reqwest::Result<reqwest::Response> {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        req.send().await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Value {
        let mut req = self.client.get(self.url(path));
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        let resp = req.send().await.expect("request sent");
        assert_eq!(resp.status(), StatusCode::OK, "GET {path}");
        resp.json().await.expect("JSON body")
    }

    /// Registers `name` (password `password123`) and logs in: the token.
    pub async fn new_user(&self, name: &str) -> String {
        let r = self
            .post(
                "/api/register",
                None,
                json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"}),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        self.login(name).await
    }

    pub async fn login(&self, name: &str) -> String {
        let r = self
            .post(
                "/api/login",
                None,
                json!({"username": name, "password": "password123"}),
            )
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    }

    /// POSTs and expects a success status; returns the JSON body.
    pub async fn ok(&self, path: &str, token: &str, body: Value) -> Value {
        let r = self.post(path, Some(token), body.clone()).await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{path} {body}: {status} {v}");
        v
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `mirage --data-dir <dir> <args>` to completion.
pub fn mirage(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("mirage runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The database of a data directory.
pub fn database(data_dir: &Path) -> PathBuf {
    data_dir.join("mirage.db")
}

fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(key)? + key.len();
    let value: String = line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (!value.is_empty()).then_some(value)
}

/// Removes terminal colour codes (`ESC [ ... m`), in case colours are on.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
