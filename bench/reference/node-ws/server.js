// The reference the issue compares us with: an idiomatic Node.js `ws` server doing the point
// workload the way most Node fan-outs are written. Each event is serialized once and handed to
// every subscriber with `ws.send`. It speaks the part of tickstream's protocol the load
// generator uses: `/ws?symbols=A,B&channels=ticker`, ticker updates of the same shape and size,
// and `/readyz`.
//
//   node bench/reference/node-ws/server.js PORT [RATE]
"use strict";

const http = require("node:http");
const { performance } = require("node:perf_hooks");
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 18710);
const rate = Number(process.argv[3] || 100);
const SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "SPY", "BTC-USD", "ETH-USD", "SOL-USD"];

const nowMicros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

const streams = new Map(
  SYMBOLS.map((symbol, i) => [
    symbol,
    { subscribers: new Set(), seq: 0, last: 100 + 37 * i, open: 100 + 37 * i, volume: 1e8 },
  ]),
);

const server = http.createServer((req, res) => {
  res.statusCode = req.url === "/readyz" || req.url === "/healthz" ? 200 : 404;
  res.end();
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 64 * 1024 });

server.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://localhost");
  if (url.pathname !== "/ws") {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    socket.setNoDelay(true);
    const mine = (url.searchParams.get("symbols") || "")
      .split(",")
      .map((s) => streams.get(s))
      .filter(Boolean);
    for (const st of mine) st.subscribers.add(ws);
    ws.on("close", () => {
      for (const st of mine) st.subscribers.delete(ws);
    });
    ws.on("error", () => ws.terminate());
  });
});

function tick() {
  const ts = nowMicros();
  for (const [symbol, st] of streams) {
    st.seq += 1;
    st.last = Math.max(0.01, st.last * (1 + (Math.random() - 0.5) * 0.0008));
    st.volume += Math.floor(Math.random() * 50);
    const bid = st.last - 0.01;
    const msg = JSON.stringify({
      type: "update",
      channel: "ticker",
      symbol,
      seq: st.seq,
      ts,
      data: {
        bid: bid.toFixed(2),
        ask: (st.last + 0.01).toFixed(2),
        last: st.last.toFixed(2),
        open: st.open.toFixed(2),
        change: (st.last - st.open).toFixed(2),
        volume: String(st.volume),
      },
    });
    for (const ws of st.subscribers) ws.send(msg);
  }
}

// Ticks on an absolute schedule so that a late timer does not slow the offered rate.
const period = 1000 / rate;
let next = performance.now() + period;
function schedule() {
  const wait = Math.max(0, next - performance.now());
  setTimeout(() => {
    tick();
    next += period;
    schedule();
  }, wait);
}

server.listen(port, "127.0.0.1", () => {
  console.error(`node-ws reference listening on 127.0.0.1:${port}, ${SYMBOLS.length} symbols x ${rate}/s`);
  schedule();
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
