// The dashboard's connection to tickstream: subscribes, keeps the last `seq` of every stream,
// resumes with them after any disconnect (a server restart included), and reconnects with
// capped exponential backoff and full jitter. No DOM here: Vitest drives it with a fake socket.

import type { BookData } from "./book";

export type Channel = "ticker" | "trades" | "candles_1s" | "candles_1m" | "book" | "book_25" | "book_50" | "book_100";

export interface Ticker {
  bid: string;
  ask: string;
  last: string;
  open: string;
  change: string;
  volume: string;
}
export interface Trade {
  price: string;
  size: string;
  side: "buy" | "sell";
}
export interface Candle {
  interval: "1s" | "1m";
  start: number;
  open: string;
  high: string;
  low: string;
  close: string;
  volume: string;
  trades: number;
  closed: boolean;
}

export interface DataMessage {
  type: "update" | "snapshot";
  channel: Channel;
  symbol: string;
  seq: number;
  ts: number;
  data: Ticker | Trade | Candle | BookData;
}

export type ConnectionState =
  | { kind: "connecting"; attempt: number }
  | { kind: "live"; since: number }
  | { kind: "waiting"; attempt: number; retryAt: number; reason: string }
  | { kind: "stopped" };

export interface Backoff {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { baseMs: 250, capMs: 10_000 };

/** Full jitter: a uniform delay in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt: number, backoff: Backoff = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const ceiling = Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

export const streamKey = (channel: string, symbol: string) => `${channel}:${symbol}`;

/** What happened to an arriving update, given the last `seq` held for its stream. */
export type Verdict = "next" | "first" | "duplicate" | "gap";

/** The last `seq` per stream, and what was lost. */
export class Positions {
  readonly last = new Map<string, number>();
  gaps = 0;
  missed = 0;
  duplicates = 0;

  accept(msg: Pick<DataMessage, "type" | "channel" | "symbol" | "seq">): Verdict {
    const key = streamKey(msg.channel, msg.symbol);
    const last = this.last.get(key);
    if (msg.type === "snapshot") {
      this.last.set(key, msg.seq);
      return "first";
    }
    if (last === undefined) {
      this.last.set(key, msg.seq);
      return "first";
    }
    if (msg.seq <= last) {
      this.duplicates += 1;
      return "duplicate";
    }
    this.last.set(key, msg.seq);
    if (msg.seq !== last + 1) {
      this.gaps += 1;
      this.missed += msg.seq - last - 1;
      return "gap";
    }
    return "next";
  }

  /** The resume map for these streams (only those we hold a position for). */
  resume(keys: Iterable<string>): Record<string, number> {
    const out: Record<string, number> = {};
    for (const k of keys) {
      const seq = this.last.get(k);
      if (seq !== undefined) out[k] = seq;
    }
    return out;
  }

  forget(key: string) {
    this.last.delete(key);
  }
}

/** The subset of the browser's WebSocket the client uses, so tests can pass a fake. */
export interface SocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface FeedOptions {
  url: string;
  connect?: (url: string) => SocketLike;
  backoff?: Backoff;
  random?: () => number;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
  onData: (msg: DataMessage, verdict: Verdict) => void;
  onState: (state: ConnectionState) => void;
  /** Streams whose position could not be recovered: the caller refetches what it shows. */
  onReset?: (keys: string[]) => void;
  /** A stream's source went down (`live` false) or came back; also from a subscribe's ack. */
  onStatus?: (key: string, live: boolean) => void;
}

interface Subscription {
  symbols: string[];
  channels: Channel[];
}

/** A resuming, reconnecting feed. `subscribe` may be called before or while connected. */
export class Feed {
  readonly positions = new Positions();
  reconnects = 0;
  resets = 0;
  epoch: string | undefined;
  private socket: SocketLike | undefined;
  private attempt = 0;
  private timer: unknown;
  private stopped = false;
  private nextId = 1;
  private readonly wanted = new Map<string, Subscription>();
  private readonly opts: Required<Omit<FeedOptions, "onReset" | "onStatus">> & Pick<FeedOptions, "onReset" | "onStatus">;

  constructor(opts: FeedOptions) {
    this.opts = {
      connect: (url) => new WebSocket(url) as unknown as SocketLike,
      backoff: DEFAULT_BACKOFF,
      random: Math.random,
      now: () => Date.now(),
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
      ...opts,
    };
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    if (this.timer !== undefined) this.opts.clearTimer(this.timer);
    this.socket?.close(1000, "bye");
    this.socket = undefined;
    this.opts.onState({ kind: "stopped" });
  }

  /** Holds `name`'s streams: sent now when connected, and again (resuming) after reconnects. */
  subscribe(name: string, symbols: string[], channels: Channel[]) {
    const old = this.wanted.get(name);
    if (old && this.socket?.readyState === 1) {
      const drop = keys(old).filter((k) => !this.heldElsewhere(k, name, { symbols, channels }));
      if (drop.length) {
        this.send({ op: "unsubscribe", symbols: old.symbols, channels: old.channels });
      }
    }
    if (old) for (const k of keys(old)) if (!this.heldElsewhere(k, name, { symbols, channels })) this.positions.forget(k);
    this.wanted.set(name, { symbols, channels });
    if (this.socket?.readyState === 1) this.sendSubscribe({ symbols, channels });
  }

  /** Drops `name`'s positions and subscribes again without them: fresh snapshots follow (a
   * book that failed its checksum must be replaced, not patched). */
  resync(name: string) {
    const sub = this.wanted.get(name);
    if (!sub) return;
    for (const k of keys(sub)) this.positions.forget(k);
    if (this.socket?.readyState === 1) {
      this.send({ op: "unsubscribe", symbols: sub.symbols, channels: sub.channels });
      this.sendSubscribe(sub);
    }
  }

  private wants(key: string): boolean {
    for (const s of this.wanted.values()) if (keys(s).includes(key)) return true;
    return false;
  }

  private heldElsewhere(key: string, except: string, replacement: Subscription): boolean {
    if (keys(replacement).includes(key)) return true;
    for (const [n, s] of this.wanted) if (n !== except && keys(s).includes(key)) return true;
    return false;
  }

  private send(msg: object) {
    this.socket?.send(JSON.stringify({ id: this.nextId++, ...msg }));
  }

  private sendSubscribe(sub: Subscription) {
    const resume = this.positions.resume(keys(sub));
    const withResume = Object.keys(resume).length > 0 && this.epoch !== undefined;
    this.send({
      op: "subscribe",
      symbols: sub.symbols,
      channels: sub.channels,
      ...(withResume ? { epoch: this.epoch, resume } : {}),
    });
  }

  private open() {
    if (this.stopped) return;
    this.opts.onState({ kind: "connecting", attempt: this.attempt });
    let socket: SocketLike;
    try {
      socket = this.opts.connect(this.opts.url);
    } catch (e) {
      this.retry(String(e));
      return;
    }
    this.socket = socket;
    let opened = false;
    socket.onopen = () => {
      opened = true;
      for (const sub of this.wanted.values()) this.sendSubscribe(sub);
    };
    socket.onmessage = (ev) => this.handle(ev.data);
    socket.onerror = () => {};
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = undefined;
      if (this.stopped) return;
      // Counts lost connections, not failed attempts while the server is away.
      if (opened) this.reconnects += 1;
      // 1012: the server is restarting and another task (or the same one, soon) will answer:
      // try at once; anything else backs off.
      if (ev.code === 1012) this.attempt = 0;
      this.retry(ev.code === 1012 ? "server restarting" : `closed (${ev.code}${ev.reason ? `: ${ev.reason}` : ""})`);
    };
  }

  private retry(reason: string) {
    const delay = backoffDelay(this.attempt, this.opts.backoff, this.opts.random);
    this.opts.onState({ kind: "waiting", attempt: this.attempt, retryAt: this.opts.now() + delay, reason });
    this.attempt += 1;
    this.timer = this.opts.setTimer(() => this.open(), delay);
  }

  private handle(raw: unknown) {
    if (typeof raw !== "string") return;
    let msg: { type?: string; [k: string]: unknown };
    try {
      msg = JSON.parse(raw);
    } catch {
      return;
    }
    switch (msg.type) {
      case "update":
      case "snapshot": {
        const data = msg as unknown as DataMessage;
        // Updates already in flight when a stream was unsubscribed: not ours any more.
        if (!this.wants(streamKey(data.channel, data.symbol))) break;
        const verdict = this.positions.accept(data);
        if (verdict !== "duplicate") this.opts.onData(data, verdict);
        break;
      }
      case "subscribed": {
        if (typeof msg.epoch === "string") this.epoch = msg.epoch;
        const lost: string[] = [];
        for (const s of (msg.streams as { channel: string; symbol: string; recovered?: boolean; status?: string }[]) ?? []) {
          if (s.recovered === false) lost.push(streamKey(s.channel, s.symbol));
          this.opts.onStatus?.(streamKey(s.channel, s.symbol), s.status !== "stale");
        }
        if (lost.length) {
          this.resets += lost.length;
          this.opts.onReset?.(lost);
        }
        this.attempt = 0;
        this.opts.onState({ kind: "live", since: this.opts.now() });
        break;
      }
      case "status":
        this.opts.onStatus?.(streamKey(String(msg.channel), String(msg.symbol)), msg.status === "live");
        break;
      default:
        // heartbeat, pong, reconnect (the close follows), error: nothing to do here.
        break;
    }
  }
}

function keys(sub: Subscription): string[] {
  return sub.channels.flatMap((c) => sub.symbols.map((s) => streamKey(c, s)));
}
