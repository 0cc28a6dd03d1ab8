//! The server's CPU time and resident memory, read from /proc, and a readiness probe.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Kernel clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

#[derive(Debug)]
pub struct Process {
    pid: u32,
}

impl Process {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// User plus system CPU seconds of all the process's threads.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // Fields after the command name, which may itself contain spaces and parentheses.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unexpected /proc stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line; 12 and 13 after the name.
        let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else {
            bail!("unexpected /proc stat format");
        };
        Ok((u.parse::<f64>()? + s.parse::<f64>()?) / CLOCK_TICKS)
    }

    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc status")
    }
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub fn now_us() -> i64 {
    (now_ns() / 1000) as i64
}

/// Whether GET /readyz answers 200.
pub async fn ready(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    stream.read_exact(&mut buf).await.is_ok() && &buf[9..12] == b"200"
}
