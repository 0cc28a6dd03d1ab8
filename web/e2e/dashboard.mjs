// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real
// tickstream: every symbol on the board with prices that change, the chart drawn, the tape
// filling, the depth ladder verified by checksum (and resynced after a corrupted update),
// updates compressed (permessage-deflate) and inflated by the browser, a phone-sized
// screen without sideways scrolling, no request leaving the server, and a
// server restart survived with no gap in any stream's seq. Saves docs/dashboard.png (and
// docs/dashboard-phone.png) for the README.
//
//   TICKSTREAM_BIN=target/debug/tickstream node web/e2e/dashboard.mjs
//
// Exits non-zero with the reason on the first failed check.

import { spawn } from "node:child_process";
import { once } from "node:events";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const bin = process.env.TICKSTREAM_BIN;
const browserPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const shots = process.env.SCREENSHOT_DIR ?? path.join(root, "docs");
if (!bin) fail("TICKSTREAM_BIN is not set: point it at a built tickstream binary");

function fail(message) {
  console.error(`dashboard e2e: FAILED: ${message}`);
  process.exit(1);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
  console.log(`ok - ${message}`);
}

async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function ready(base, within = 10_000) {
  const deadline = Date.now() + within;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch {
      // not listening yet
    }
    await sleep(20);
  }
  throw new Error(`${base}/readyz did not answer 200 within ${within} ms`);
}

function startServer(port) {
  const child = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--sim-rate", "10"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.stderr.on("data", () => {});
  return child;
}

async function stopServer(child) {
  child.kill("SIGTERM");
  const [code] = await once(child, "exit");
  return code;
}

async function main() {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  let server = startServer(port);
  await ready(base);
  const { symbols } = await (await fetch(`${base}/api/v1/symbols`)).json();

  const browser = await chromium.launch({
    executablePath: browserPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const foreign = [];
    page.on("request", (r) => {
      const url = r.url();
      if (!url.startsWith(base) && !url.startsWith(`ws://127.0.0.1:${port}`) && !url.startsWith("data:")) foreign.push(url);
    });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // While the server is down the browser logs each refused connection; those are expected.
    page.on("console", (m) => m.type() === "error" && !m.text().includes("ERR_CONNECTION_REFUSED") && errors.push(m.text()));
    await page.goto(`${base}/#AAPL`);

    // The board: every symbol, each with a price.
    await page.waitForFunction(
      (n) => {
        const cells = [...document.querySelectorAll(".board tbody [data-testid=last]")];
        return cells.length === n && cells.every((c) => c.textContent !== "—");
      },
      symbols.length,
      { timeout: 10_000 },
    );
    const prices = () =>
      page.$$eval(".board tbody tr", (rows) => Object.fromEntries(rows.map((r) => [r.dataset.symbol, r.querySelector("[data-testid=last]").textContent])));
    const before = await prices();
    check(Object.keys(before).length === symbols.length && symbols.every((s) => before[s]), `the board shows all ${symbols.length} symbols with prices`);
    await sleep(3000);
    const after = await prices();
    const moved = symbols.filter((s) => before[s] !== after[s]);
    check(moved.length >= symbols.length / 2, `prices change live (${moved.length} of ${symbols.length} moved in 3 s)`);
    check((await page.$$(".board tbody [class^=flash-]")).length > 0, "changed prices flash");

    // The chart draws candles and the tape fills.
    await page.waitForFunction(() => Number(document.querySelector(".chart-box")?.dataset.bars) > 0, null, { timeout: 10_000 });
    const inked = await page.$$eval(".chart-box canvas", (canvases) =>
      canvases.reduce((n, c) => {
        const ctx = c.getContext("2d");
        if (!ctx || !c.width || !c.height) return n;
        const { data } = ctx.getImageData(0, 0, c.width, c.height);
        let painted = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) painted++;
        return n + painted;
      }, 0),
    );
    check(inked > 1000, `the chart is drawn (${inked} painted pixels)`);
    await page.waitForFunction(() => document.querySelectorAll(".tape li").length >= 3, null, { timeout: 10_000 });
    check(true, "the trade tape fills");
    check((await page.textContent(".status")).includes("Live"), "the connection shows Live");

    // The depth ladder: ten levels a side with cumulative depth, every message checked against
    // its CRC32 in the browser, its best levels the ticker's quote at the same seq.
    await page.waitForFunction(
      () => document.querySelector(".ladder")?.dataset.state === "verified" && document.querySelectorAll(".ladder tr.bid").length === 10 && document.querySelectorAll(".ladder tr.ask").length === 10,
      null,
      { timeout: 10_000 },
    );
    const depths = await page.$$eval(".ladder tr.bid .depth", (cells) => cells.map((c) => Number(c.dataset.depth)));
    check(depths.every((d, i) => i === 0 || d > depths[i - 1]), `the ladder shows 10 bids and 10 asks with cumulative depth (${depths[0]} .. ${depths[9]})`);
    await page.waitForFunction(
      () => {
        const { market } = window.__tickstream;
        const ladder = market.ladders.get("AAPL");
        const quote = market.quotes.get("AAPL");
        return ladder && quote && ladder.seq === quote.seq && ladder.book.bids[0][0] === quote.ticker.bid && ladder.book.asks[0][0] === quote.ticker.ask;
      },
      null,
      { timeout: 10_000 },
    );
    check(true, "the book's best bid and ask are the ticker's at the same seq");
    await page.waitForFunction(() => window.__tickstream.market.ladders.get("AAPL").verified >= 20, null, { timeout: 10_000 });
    const verified = await page.evaluate(() => {
      const l = window.__tickstream.market.ladders.get("AAPL");
      return { verified: l.verified, mismatches: l.mismatches };
    });
    check(verified.mismatches === 0, `every book message passed its checksum in the browser (${verified.verified} messages)`);
    // A corrupted update (what a broken network or server would deliver): the checksum catches
    // it, the ladder says so, subscribes again and shows a verified book from a fresh snapshot.
    await page.evaluate(() => {
      const { market } = window.__tickstream;
      const l = market.ladders.get("AAPL");
      market.apply({ type: "update", channel: "book", symbol: "AAPL", seq: l.seq + 1, ts: 0, data: { bids: [["1.00", "5"]], asks: [], checksum: 0 } });
    });
    await page.waitForFunction(
      () => {
        const l = window.__tickstream.market.ladders.get("AAPL");
        return l.mismatches === 1 && l.resyncs === 1 && !l.stale && document.querySelector(".ladder")?.dataset.state === "verified" && !l.book.bids.some(([p]) => p === "1.00");
      },
      null,
      { timeout: 10_000 },
    );
    check((await page.textContent("[data-testid=book-resyncs]")).includes("1 resync"), "a corrupted book is caught by its checksum, resynced from a snapshot, and the resync is shown");

    // Another symbol and interval: the chart follows.
    await page.click("tbody tr[data-symbol=BTC-USD]");
    await page.click(".intervals button:has-text('1m')");
    await page.waitForFunction(() => location.hash === "#BTC-USD" && Number(document.querySelector(".chart-box")?.dataset.bars) > 0, null, { timeout: 10_000 });
    check((await page.textContent(".chart-head h2")).startsWith("BTC-USD"), "selecting a symbol charts it");

    // A server restart: the page reconnects and resumes with no gap in any stream.
    const stats = () =>
      page.evaluate(() => {
        const f = window.__tickstream.feed;
        return { gaps: f.positions.gaps, missed: f.positions.missed, resets: f.resets, reconnects: f.reconnects, last: Object.fromEntries(f.positions.last) };
      });
    const held = await stats();
    check(held.gaps === 0 && held.reconnects === 0, "no gap before the restart");
    // Chromium offers permessage-deflate and inflates with its own zlib: everything above was
    // read through our encoder.
    const metrics = await (await fetch(`${base}/metrics`)).text();
    const metric = (name) => Number(metrics.match(new RegExp(`^${name} (\\d+)`, "m"))?.[1] ?? 0);
    const [zin, zout] = [metric("tickstream_deflate_in_bytes_total"), metric("tickstream_deflate_out_bytes_total")];
    check(metric("tickstream_connections_compressed") >= 1 && zout > 0 && zout * 3 < zin, `the browser reads compressed updates (${zin} bytes sent as ${zout})`);
    const code = await stopServer(server);
    check(code === 0, "the server drained and exited 0 on SIGTERM");
    await page.waitForFunction(() => document.querySelector(".status")?.dataset.state !== "live", null, { timeout: 5000 });
    check(true, `the page shows the disconnect: "${await page.textContent(".status > span:nth-child(2)")}"`);
    await sleep(1500);
    server = startServer(port);
    await ready(base);
    await page.waitForFunction(() => document.querySelector(".status")?.dataset.state === "live", null, { timeout: 15_000 });
    // Every stream held before the restart moves on past where it was (within 15 s).
    const laggards = await page
      .waitForFunction(
        (before) => {
          const last = window.__tickstream.feed.positions.last;
          return Object.keys(before).every((k) => (last.get(k) ?? 0) > before[k]);
        },
        held.last,
        { timeout: 15_000 },
      )
      .then(
        () => [],
        async () => {
          const now = (await stats()).last;
          return Object.keys(held.last).filter((k) => !(now[k] > held.last[k])).map((k) => `${k} ${held.last[k]} -> ${now[k]}`);
        },
      );
    const resumed = await stats();
    check(resumed.reconnects >= 1, `the page reconnected (${resumed.reconnects} reconnect(s))`);
    check(laggards.length === 0, `every stream moved on after the restart (${Object.keys(held.last).length} streams)${laggards.length ? `; stuck: ${laggards.join(", ")}` : ""}`);
    check(resumed.gaps === 0 && resumed.missed === 0 && resumed.resets === 0, "no seq gap across the restart: every stream resumed");

    await page.click("tbody tr[data-symbol=AAPL]");
    await page.click(".intervals button:has-text('1s')");
    await page.waitForFunction(() => Number(document.querySelector(".chart-box")?.dataset.bars) > 3, null, { timeout: 10_000 });
    await sleep(1500);
    await page.screenshot({ path: path.join(shots, "dashboard.png") });

    // A phone: everything fits the width.
    await page.setViewportSize({ width: 390, height: 844 });
    await sleep(500);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    check(overflow <= 0, `no sideways scrolling on a 390 px screen (overflow ${overflow} px)`);
    await page.screenshot({ path: path.join(shots, "dashboard-phone.png"), fullPage: false });

    check(foreign.length === 0, `no request leaves the server${foreign.length ? `: ${foreign.join(", ")}` : ""}`);
    check(errors.length === 0, `no errors in the page${errors.length ? `: ${errors.join("; ")}` : ""}`);
  } finally {
    await browser.close();
    server.kill("SIGKILL");
  }
}

main().then(
  () => console.log("dashboard e2e: passed"),
  (e) => fail(e.message),
);
