import { describe, expect, it } from "vitest";
import { backoffDelay, Feed, Positions, type ConnectionState, type DataMessage, type SocketLike } from "./feed";

class FakeSocket implements SocketLike {
  readyState = 0;
  sent: Record<string, unknown>[] = [];
  onopen: SocketLike["onopen"] = null;
  onmessage: SocketLike["onmessage"] = null;
  onclose: SocketLike["onclose"] = null;
  onerror: SocketLike["onerror"] = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  receive(msg: object) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop(code: number) {
    this.readyState = 3;
    this.onclose?.({ code, reason: "" });
  }
}

function harness(random = () => 0.5) {
  const sockets: FakeSocket[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const data: [DataMessage, string][] = [];
  const states: ConnectionState[] = [];
  const resets: string[][] = [];
  const statuses: [string, boolean][] = [];
  const feed = new Feed({
    url: "ws://test/ws",
    connect: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    random,
    now: () => 1000,
    setTimer: (fn, ms) => timers.push({ fn, ms }),
    clearTimer: () => {},
    onData: (m, v) => data.push([m, v]),
    onState: (s) => states.push(s),
    onReset: (k) => resets.push(k),
    onStatus: (k, live) => statuses.push([k, live]),
  });
  return { feed, sockets, timers, data, states, resets, statuses };
}

const update = (seq: number, channel = "ticker", symbol = "AAPL", type = "update") => ({
  type,
  channel,
  symbol,
  seq,
  ts: seq * 1000,
  data: {},
});

describe("backoffDelay", () => {
  it("grows exponentially, is capped, and is fully jittered", () => {
    const b = { baseMs: 100, capMs: 5000 };
    expect(backoffDelay(0, b, () => 0.999)).toBe(99);
    expect(backoffDelay(3, b, () => 0.999)).toBe(799);
    expect(backoffDelay(20, b, () => 0.999)).toBe(4995);
    expect(backoffDelay(1000, b, () => 0.999)).toBe(4995);
    expect(backoffDelay(5, b, () => 0)).toBe(0);
    const samples = new Set(Array.from({ length: 50 }, () => backoffDelay(4, b)));
    expect(samples.size).toBeGreaterThan(10);
    for (const s of samples) expect(s).toBeLessThan(1600);
  });
});

describe("Positions", () => {
  it("accepts the next seq, skips duplicates and counts what a jump lost", () => {
    const p = new Positions();
    expect(p.accept(update(10, "ticker", "AAPL", "snapshot") as DataMessage)).toBe("first");
    expect(p.accept(update(11) as DataMessage)).toBe("next");
    expect(p.accept(update(11) as DataMessage)).toBe("duplicate");
    expect(p.accept(update(15) as DataMessage)).toBe("gap");
    expect([p.gaps, p.missed, p.duplicates]).toEqual([1, 3, 1]);
    expect(p.resume(["ticker:AAPL", "trades:AAPL"])).toEqual({ "ticker:AAPL": 15 });
  });
});

describe("Feed", () => {
  it("subscribes on open and resumes with the last seq and epoch after a restart", () => {
    const h = harness();
    h.feed.subscribe("board", ["AAPL"], ["ticker"]);
    h.feed.start();
    h.sockets[0].open();
    expect(h.sockets[0].sent[0]).toMatchObject({ op: "subscribe", symbols: ["AAPL"], channels: ["ticker"] });
    expect(h.sockets[0].sent[0]).not.toHaveProperty("resume");
    h.sockets[0].receive({ type: "subscribed", epoch: "sim-1", streams: [{ channel: "ticker", symbol: "AAPL", seq: 41 }] });
    h.sockets[0].receive(update(41, "ticker", "AAPL", "snapshot"));
    h.sockets[0].receive(update(42));
    expect(h.states.at(-1)).toMatchObject({ kind: "live" });

    // The server restarts: reconnect at once and resume from 42.
    h.sockets[0].receive({ type: "reconnect", reason: "shutting down", streams: { "ticker:AAPL": 42 } });
    h.sockets[0].drop(1012);
    expect(h.states.at(-1)).toMatchObject({ kind: "waiting", attempt: 0, reason: "server restarting" });
    h.timers.shift()!.fn();
    h.sockets[1].open();
    expect(h.sockets[1].sent[0]).toMatchObject({ op: "subscribe", epoch: "sim-1", resume: { "ticker:AAPL": 42 } });
    h.sockets[1].receive({ type: "subscribed", epoch: "sim-1", streams: [{ channel: "ticker", symbol: "AAPL", seq: 42, recovered: true }] });
    h.sockets[1].receive(update(42)); // already held: skipped
    h.sockets[1].receive(update(43));
    expect(h.data.map(([m, v]) => [m.seq, v])).toEqual([
      [41, "first"],
      [42, "next"],
      [43, "next"],
    ]);
    expect(h.feed.positions.gaps).toBe(0);
    expect(h.feed.reconnects).toBe(1);
  });

  it("backs off with growing delays while the server is down, and resets after success", () => {
    const h = harness(() => 0.999);
    h.feed.subscribe("board", ["AAPL"], ["ticker"]);
    h.feed.start();
    const delays: number[] = [];
    for (let i = 0; i < 4; i++) {
      h.sockets[i].drop(1006);
      const t = h.timers.shift()!;
      delays.push(t.ms);
      t.fn();
    }
    expect(delays).toEqual([249, 499, 999, 1998]);
    expect(h.feed.reconnects).toBe(0); // attempts that never connected are not reconnects
    h.sockets[4].open();
    h.sockets[4].receive({ type: "subscribed", epoch: "sim-1", streams: [] });
    h.sockets[4].drop(1006);
    expect(h.timers.shift()!.ms).toBe(249);
  });

  it("reports streams the server could not recover, so the view refetches them", () => {
    const h = harness();
    h.feed.subscribe("chart", ["MSFT"], ["candles_1m"]);
    h.feed.start();
    h.sockets[0].open();
    h.sockets[0].receive({ type: "subscribed", epoch: "sim-1", streams: [] });
    h.sockets[0].receive(update(5, "candles_1m", "MSFT"));
    h.sockets[0].drop(1006);
    h.timers.shift()!.fn();
    h.sockets[1].open();
    h.sockets[1].receive({ type: "subscribed", epoch: "sim-1", streams: [{ channel: "candles_1m", symbol: "MSFT", seq: 900, recovered: false }] });
    expect(h.resets).toEqual([["candles_1m:MSFT"]]);
    h.sockets[1].receive(update(900, "candles_1m", "MSFT", "snapshot"));
    expect(h.data.at(-1)![1]).toBe("first");
    expect(h.feed.positions.gaps).toBe(0);
  });

  it("changes a named subscription: unsubscribes the old streams and forgets their positions", () => {
    const h = harness();
    h.feed.subscribe("chart", ["AAPL"], ["candles_1s"]);
    h.feed.start();
    h.sockets[0].open();
    h.sockets[0].receive(update(7, "candles_1s", "AAPL"));
    h.feed.subscribe("chart", ["MSFT"], ["candles_1s"]);
    const sent = h.sockets[0].sent.map((m) => [m.op, m.symbols]);
    expect(sent).toEqual([
      ["subscribe", ["AAPL"]],
      ["unsubscribe", ["AAPL"]],
      ["subscribe", ["MSFT"]],
    ]);
    expect(h.feed.positions.last.has("candles_1s:AAPL")).toBe(false);
    // An update that was already on its way is dropped, not tracked again.
    h.sockets[0].receive(update(8, "candles_1s", "AAPL"));
    expect(h.feed.positions.last.has("candles_1s:AAPL")).toBe(false);
    expect(h.data.map(([m]) => m.symbol)).toEqual(["AAPL"]);
  });

  it("ignores what it does not understand", () => {
    const h = harness();
    h.feed.start();
    h.sockets[0].open();
    h.sockets[0].onmessage?.({ data: "not json" });
    h.sockets[0].receive({ type: "heartbeat", ts: 1, streams: {} });
    expect(h.data).toEqual([]);
  });
});

describe("Feed.resync", () => {
  it("subscribes again without a resume position, so a snapshot replaces the stream", () => {
    const { feed, sockets } = harness();
    feed.subscribe("ladder", ["AAPL"], ["book"]);
    feed.subscribe("board", ["AAPL"], ["ticker"]);
    feed.start();
    const s = sockets[0];
    s.open();
    s.receive({ type: "subscribed", epoch: "e", streams: [] });
    s.receive(update(7, "book", "AAPL", "snapshot"));
    s.receive(update(8, "book"));
    s.receive(update(3, "ticker"));
    s.sent.length = 0;
    feed.resync("ladder");
    expect(s.sent.map((m) => [m.op, m.channels, m.resume])).toEqual([
      ["unsubscribe", ["book"], undefined],
      ["subscribe", ["book"], undefined],
    ]);
    expect(feed.positions.last.get("book:AAPL")).toBeUndefined();
    expect(feed.positions.last.get("ticker:AAPL")).toBe(3);
  });
});

describe("status messages", () => {
  it("reach the caller, from the ack and on their own", () => {
    const { feed, sockets, statuses } = harness();
    feed.subscribe("ladder", ["SOL-USD"], ["book"]);
    feed.start();
    sockets[0].open();
    sockets[0].receive({ type: "subscribed", epoch: "e", streams: [{ channel: "book", symbol: "SOL-USD", seq: 0, status: "stale" }] });
    sockets[0].receive({ type: "status", channel: "book", symbol: "SOL-USD", status: "live" });
    expect(statuses).toEqual([
      ["book:SOL-USD", false],
      ["book:SOL-USD", true],
    ]);
  });
});
