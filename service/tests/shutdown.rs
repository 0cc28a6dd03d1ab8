//! Graceful shutdown: readiness fails, clients get `reconnect` and 1012, and the process exits
//! 0 within the drain deadline, both in the library and as the real binary under SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn run_tells_clients_to_reconnect_then_returns() {
    let mut server = start(|c| c.drain_timeout = Duration::from_secs(3)).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut ws = server
            .connect("?symbols=AAPL,MSFT&channels=ticker,trades")
            .await;
        recv(&mut ws).await;
        clients.push(ws);
    }
    let started = Instant::now();
    server.stop().await.expect("run ends cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "drained before the deadline"
    );
    assert!(!server.state.is_ready());
    for mut ws in clients {
        let (texts, code) = until_close(&mut ws).await;
        expect_reconnect(&texts, code, "ticker:AAPL");
    }
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_shutdown_past_the_deadline() {
    let mut server = start(|c| {
        c.drain_timeout = Duration::from_millis(1500);
        c.sim_rate = 200;
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = socket.connect(server.addr).await.expect("connect");
    let url = server.ws_url("?symbols=AAPL,MSFT,BTC-USD&channels=ticker,trades,candles");
    let (_stuck, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .expect("handshake");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    server.stop().await.expect("run ends");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "bounded by the drain deadline: {:?}",
        started.elapsed()
    );
}

/// The binary as a process: SIGTERM while a client is connected.
#[tokio::test]
async fn the_binary_exits_zero_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--drain-timeout",
            "5s",
        ])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tickstream");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "listening" {
            addr = v["addr"].as_str().map(str::to_string);
        }
        if v["message"] == "feed live; ready" {
            break;
        }
    }
    let addr = addr.expect("the binary logs its address");
    let status =
        tickstream::probe::http_get(addr.parse().expect("addr"), "/readyz", WAIT).expect("readyz");
    assert_eq!(status.0, 200);
    let mut ws = connect(&format!("ws://{addr}/ws?symbols=AAPL")).await;
    recv(&mut ws).await;

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (texts, code) = until_close(&mut ws).await;
    assert!(texts.iter().any(|t| t["type"] == "reconnect"));
    assert_eq!(code, Some(1012));
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "exits within the drain deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn healthcheck_exits_zero_only_when_ready() {
    let bin = env!("CARGO_BIN_EXE_tickstream");
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let check = || {
        Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "healthcheck"])
            .stderr(Stdio::null())
            .status()
            .expect("run healthcheck")
    };
    assert!(!check().success(), "nothing listens yet");
    let mut child = Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    let deadline = Instant::now() + WAIT;
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = check().success();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "healthcheck passes once the server is ready");
}
