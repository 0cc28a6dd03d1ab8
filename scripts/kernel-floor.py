#!/usr/bin/env python3
# The kernel floor of the point and scale benchmarks: a server that does nothing but send one
# pre-built WebSocket frame per client per tick (RATE ticks/s, default 100) with plain send()
# calls from one thread, in connection order. Its system CPU time per million messages is what the
# kernel charges for the TCP path on loopback, whatever the server; its latency is that of the
# simplest possible fan-out. With THREADS > 1 (default 1), each tick's sends are split into that
# many contiguous runs sent at once from as many threads (send() releases the GIL): a floor for
# servers that write from several threads (issue #18).
#   python3 scripts/kernel-floor.py 1000 18095 [RATE [THREADS]] &
#   target/release/tickstream-load run --url ws://127.0.0.1:18095/ws -c 1000 -d 20s --server-pid $!
import socket, time, base64, hashlib, json, sys, select, os, threading
N = int(sys.argv[1]); PORT = int(sys.argv[2]); RATE = int(sys.argv[3]) if len(sys.argv) > 3 else 100
THREADS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("127.0.0.1", PORT)); ls.listen(4096)
print("listening", flush=True)
conns = []  # (sock, symbol)
syms = "AAPL,MSFT,NVDA,AMZN,GOOGL,TSLA,SPY,BTC-USD,ETH-USD,SOL-USD".split(",")
while len(conns) < N:
    s, _ = ls.accept()
    req = b""
    while b"\r\n\r\n" not in req: req += s.recv(4096)
    head = req.decode()
    key = [l.split(":",1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1((key+"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    s.sendall(f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {acc}\r\n\r\n".encode())
    sym = head.split("symbols=")[1].split("&")[0]
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1); s.setblocking(False)
    conns.append((s, sym))
print("all connected", flush=True)
runs = [conns[i * N // THREADS:(i + 1) * N // THREADS] for i in range(THREADS)]
def send_run(run, frames):
    for s, sym in run:
        try: s.send(frames[sym])
        except BlockingIOError: pass
# Helpers wait for a tick's frames, send their run, and meet the main thread at the barrier.
ticks = [threading.Event() for _ in range(THREADS)]; sent = threading.Barrier(THREADS); current = {}
def helper(i):
    while True:
        ticks[i].wait(); ticks[i].clear()
        send_run(runs[i], current["frames"])
        sent.wait()
for i in range(1, THREADS): threading.Thread(target=helper, args=(i,), daemon=True).start()
seq = 1; t = time.time()
while True:
    t += 1.0 / RATE
    d = t - time.time()
    if d > 0: time.sleep(d)
    ts = int(t * 1e6); seq += 1
    frames = {}
    for sym in syms:
        p = json.dumps({"type":"update","channel":"ticker","symbol":sym,"seq":seq,"ts":ts,"data":{"bid":"192.20","ask":"192.22","last":"192.20","open":"189.54","change":"2.66","volume":"15039526"}}).encode()
        frames[sym] = bytes([0x81, 126]) + len(p).to_bytes(2, "big") + p
    current["frames"] = frames
    for i in range(1, THREADS): ticks[i].set()
    send_run(runs[0], frames)
    if THREADS > 1: sent.wait()
