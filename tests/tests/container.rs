//! The static musl binary that the Dockerfile's builder stage makes, run the way Fargate runs
//! the image: as PID 1 of its own PID namespace, as a numeric non-root user, on a read-only
//! root file system that holds nothing but the binary. Our machines cannot run the Alpine image
//! itself (no container engine, no base images); this is everything short of that.
//!
//! `scripts/check` builds the binary and sets `TICKSTREAM_STATIC_BIN`; without it this test
//! fails, naming the command to run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tickstream_e2e::static_binary;
use tokio_tungstenite::tungstenite::Message;

const UID: u32 = 10001;

/// A root file system with only the binary and an empty /proc, readable by the non-root user.
fn rootfs(bin: &Path) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tickstream-rootfs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("proc")).expect("create rootfs");
    std::fs::copy(bin, root.join("tickstream")).expect("copy the binary");
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&root)
        .status()
        .expect("chmod");
    assert!(status.success());
    root
}

/// `unshare` forks the namespace's PID 1; its host pid is the only child of `unshare`.
fn pid_one(unshare: &Child) -> u32 {
    let children = format!("/proc/{0}/task/{0}/children", unshare.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(pid) = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "unshare started no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_static_binary_runs_as_pid_1_non_root_on_a_read_only_root() {
    let bin = static_binary();
    let root = rootfs(&bin);
    let r = root.display();
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port();
    let read_only = format!("mount --bind {r} {r} && mount -o remount,bind,ro {r}");
    let script = format!(
        "{read_only} && mount -t proc proc {r}/proc && exec chroot --userspec={UID}:{UID} {r} \
         /tickstream --listen 127.0.0.1:{port} --log-format json --drain-timeout 5s"
    );
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "sh", "-c", &script])
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare (util-linux) must be installed and allowed");
    let pid = pid_one(&unshare);

    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ready = loop {
        match tickstream::probe::http_get(addr, "/readyz", Duration::from_secs(1)) {
            Ok((200, _)) => break true,
            _ if Instant::now() > deadline => break false,
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(ready, "/readyz answers 200");
    assert!(
        status_field(pid, "NSpid:").ends_with("\t1") || status_field(pid, "NSpid:").ends_with(" 1"),
        "PID 1 in its namespace"
    );
    assert!(
        status_field(pid, "Uid:").starts_with(&format!("{UID}\t")),
        "runs as uid {UID}"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root_mount = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    assert!(
        root_mount
            .split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "read-only root: {root_mount}"
    );

    // The container's HEALTHCHECK: the same binary, same user, same read-only root.
    let check = format!(
        "{read_only} && chroot --userspec={UID}:{UID} {r} /tickstream --listen 127.0.0.1:{port} healthcheck"
    );
    let health = Command::new("unshare")
        .args(["--mount", "sh", "-c", &check])
        .status()
        .expect("healthcheck");
    assert!(health.success(), "tickstream healthcheck exits 0");

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?symbols=AAPL"))
            .await
            .expect("WebSocket to the container");
    let first = ws.next().await.expect("a message").expect("ok");
    assert!(first.to_text().unwrap_or_default().contains("subscribed"));

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let mut reconnect = false;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Text(t))) => reconnect |= t.contains("\"reconnect\""),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => break None,
        }
    };
    assert!(reconnect, "a reconnect message before the close");
    assert_eq!(code, Some(1012));
    let exit = loop {
        if let Some(status) = unshare.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "PID 1 exits within the drain deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "PID 1 exits 0 on SIGTERM: {exit:?}");
    let _ = std::fs::remove_dir_all(&root);
}
