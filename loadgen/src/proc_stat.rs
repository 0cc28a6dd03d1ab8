//! The server's CPU time and resident memory, read from /proc, and a readiness probe.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Kernel clock ticks per second for /proc/PID/stat times (USER_HZ, 100 on Linux).
const CLOCK_TICKS: f64 = 100.0;

/// CPU seconds spent in user space and in the kernel (which includes the soft interrupts the
/// kernel ran on the process's behalf, such as loopback's receive path).
#[derive(Debug, Clone, Copy)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self {
            user: self.user - rhs.user,
            system: self.system - rhs.system,
        }
    }
}

impl CpuTime {
    pub fn total(self) -> f64 {
        self.user + self.system
    }
}

#[derive(Debug)]
pub struct Process {
    pid: u32,
}

impl Process {
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// CPU seconds of all the process's threads, split into user space and kernel: on
    /// loopback most of a fan-out's cost is the kernel's, and the split shows how much.
    pub fn cpu(&self) -> anyhow::Result<CpuTime> {
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
        Ok(CpuTime {
            user: u.parse::<f64>()? / CLOCK_TICKS,
            system: s.parse::<f64>()? / CLOCK_TICKS,
        })
    }

    /// Open file descriptors: sockets included, so a leak of connections shows here.
    pub fn open_files(&self) -> anyhow::Result<usize> {
        let path = format!("/proc/{}/fd", self.pid);
        Ok(std::fs::read_dir(&path)
            .with_context(|| format!("reading {path}"))?
            .count())
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

/// The whole machine's CPU ticks from /proc/stat: all of them, and those stolen by the
/// hypervisor. A virtual machine whose host is busy loses time it cannot see otherwise, and
/// latency figures from such a run say more about the neighbours than about the server.
#[derive(Debug, Clone, Copy)]
pub struct HostTicks {
    pub total: u64,
    pub steal: u64,
}

impl HostTicks {
    pub fn read() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        Self::parse(&stat).context("unexpected /proc/stat format")
    }

    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        // already counted in user.
        let steal = *fields.get(7)?;
        Some(Self {
            total: fields.iter().take(8).sum(),
            steal,
        })
    }

    /// Share of the machine's time stolen between `self` (earlier) and `later`, in percent.
    pub fn steal_pct_until(self, later: Self) -> f64 {
        let total = later.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * later.steal.saturating_sub(self.steal) as f64 / total as f64
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

#[cfg(test)]
mod tests {
    use super::HostTicks;

    #[test]
    fn steal_is_the_eighth_field_of_the_cpu_line() {
        let before =
            HostTicks::parse("cpu  100 0 50 800 10 0 5 5 0 0\ncpu0 1 2 3\n").expect("parse");
        let after = HostTicks::parse("cpu  150 0 70 850 10 0 5 35 0 0\n").expect("parse");
        assert_eq!((before.total, before.steal), (970, 5));
        // 150 ticks passed, 30 of them stolen.
        let pct = before.steal_pct_until(after);
        assert!((pct - 20.0).abs() < 1e-9, "{pct}");
        assert!(HostTicks::parse("intr 1 2 3\n").is_none());
    }
}
