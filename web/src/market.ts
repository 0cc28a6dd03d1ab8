// What the dashboard shows, kept outside React: messages arrive far faster than a screen
// refreshes, so they update this store and views re-render at most once per animation frame.

import { Book, type BookData } from "./book";
import type { Candle, DataMessage, Ticker, Trade } from "./feed";

/** One symbol's book as the ladder shows it, verified message by message. */
export interface Ladder {
  book: Book;
  seq: number;
  /** Messages whose checksum matched. */
  verified: number;
  /** Checksum mismatches seen (each one starts a resync). */
  mismatches: number;
  /** Snapshots that replaced a book we held: resets from the source and our own resyncs. */
  resyncs: number;
  /** Waiting for the snapshot of a resync: the book shown is not to be trusted. */
  stale: boolean;
  /** The source is down: the book shown is the last one, not moving. */
  sourceDown: boolean;
}

export interface Quote {
  ticker: Ticker;
  seq: number;
  /** Direction of the last price move, for the flash. */
  move: "up" | "down" | "flat";
  /** Bumped on each price change, so the flash restarts. */
  ticks: number;
}

export interface Print extends Trade {
  symbol: string;
  seq: number;
  ts: number;
}

export const TAPE_LENGTH = 60;

export class Market {
  quotes = new Map<string, Quote>();
  ladders = new Map<string, Ladder>();
  /** Called when a book fails its checksum: the caller subscribes again for a snapshot. */
  onMismatch: (symbol: string) => void = () => {};
  tape: Print[] = [];
  version = 0;
  private listeners = new Set<() => void>();
  private candleListeners = new Set<(symbol: string, candle: Candle) => void>();
  private scheduled = false;

  apply(msg: DataMessage) {
    switch (msg.channel) {
      case "ticker": {
        const ticker = msg.data as Ticker;
        const old = this.quotes.get(msg.symbol);
        const delta = old ? Number(ticker.last) - Number(old.ticker.last) : 0;
        this.quotes.set(msg.symbol, {
          ticker,
          seq: msg.seq,
          move: delta > 0 ? "up" : delta < 0 ? "down" : (old?.move ?? "flat"),
          ticks: (old?.ticks ?? 0) + (delta !== 0 ? 1 : 0),
        });
        break;
      }
      case "trades":
        this.tape.unshift({ ...(msg.data as Trade), symbol: msg.symbol, seq: msg.seq, ts: msg.ts });
        if (this.tape.length > TAPE_LENGTH) this.tape.length = TAPE_LENGTH;
        break;
      case "book":
        this.applyBook(msg.symbol, msg.type, msg.seq, msg.data as BookData);
        break;
      case "book_25":
      case "book_50":
      case "book_100":
        return;
      default:
        for (const l of this.candleListeners) l(msg.symbol, msg.data as Candle);
        return;
    }
    this.schedule();
  }

  private applyBook(symbol: string, type: DataMessage["type"], seq: number, data: BookData) {
    let ladder = this.ladders.get(symbol);
    const snapshot = type === "snapshot";
    if (!ladder) {
      ladder = { book: new Book(), seq, verified: 0, mismatches: 0, resyncs: 0, stale: !snapshot, sourceDown: false };
      this.ladders.set(symbol, ladder);
    } else if (snapshot && (data.reset || ladder.stale)) {
      ladder.resyncs += 1;
    }
    if (!snapshot && ladder.stale) return;
    ladder.seq = seq;
    if (ladder.book.apply(data, snapshot)) {
      ladder.verified += 1;
      ladder.stale = false;
    } else {
      ladder.mismatches += 1;
      ladder.stale = true;
      this.onMismatch(symbol);
    }
  }

  /** A book stream's source went down or came back (a `status` message). */
  setStatus(key: string, live: boolean) {
    const [channel, symbol] = key.split(":");
    if (channel !== "book") return;
    const ladder = this.ladders.get(symbol);
    if (ladder && ladder.sourceDown === live) {
      ladder.sourceDown = !live;
      this.schedule();
    }
  }

  clearTape() {
    this.tape = [];
    this.schedule();
  }

  onCandle(fn: (symbol: string, candle: Candle) => void): () => void {
    this.candleListeners.add(fn);
    return () => this.candleListeners.delete(fn);
  }

  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  snapshot = () => this.version;

  private schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    const flush = () => {
      this.scheduled = false;
      this.version += 1;
      for (const l of this.listeners) l();
    };
    if (typeof requestAnimationFrame === "function" && !document.hidden) requestAnimationFrame(flush);
    else setTimeout(flush, 100);
  }
}

/** "192.2" -> "192.20": prices keep the precision of their quote. */
export function formatChange(change: string, open: string): string {
  const c = Number(change);
  const o = Number(open);
  const pct = o ? (c / o) * 100 : 0;
  const sign = c > 0 ? "+" : "";
  return `${sign}${change} (${sign}${pct.toFixed(2)}%)`;
}

export function formatVolume(v: string): string {
  const n = Number(v);
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return v;
}

export function formatTime(tsMicros: number): string {
  const d = new Date(tsMicros / 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
