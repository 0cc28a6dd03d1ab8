import { describe, expect, it } from "vitest";
import { Book, checksum, cmpDecimal, crc32, type Level } from "./book";
import { Market } from "./market";
import type { DataMessage } from "./feed";

describe("book checksum", () => {
  it("is zlib's CRC32", () => {
    expect(crc32("123456789")).toBe(0xcbf43926);
    expect(crc32("")).toBe(0);
  });

  it("matches Kraken's documented example", () => {
    const bids: Level[] = [
      ["45283.5", "0.10000000"], ["45283.4", "1.54582015"], ["45282.1", "0.10000000"], ["45281.0", "0.10000000"],
      ["45280.3", "1.54592586"], ["45279.0", "0.07990000"], ["45277.6", "0.03310103"], ["45277.5", "0.30000000"],
      ["45277.3", "1.54602737"], ["45276.6", "0.15445238"],
    ];
    const asks: Level[] = [
      ["45285.2", "0.00100000"], ["45286.4", "1.54571953"], ["45286.6", "1.54571109"], ["45289.6", "1.54560911"],
      ["45290.2", "0.15890660"], ["45291.8", "1.54553491"], ["45294.7", "0.04454749"], ["45296.1", "0.35380000"],
      ["45297.5", "0.09945542"], ["45299.5", "0.18772827"],
    ];
    expect(checksum(bids, asks)).toBe(3310070434);
  });

  it("orders decimals by value", () => {
    expect(cmpDecimal("1.5", "1.50")).toBe(0);
    expect(cmpDecimal("9.99", "10")).toBe(-1);
    expect(cmpDecimal("0.051", "0.05")).toBe(1);
  });
});

// The snapshot and the update docs/protocol.md shows, captured from the server.
const SNAPSHOT = {
  bids: [["186.66", "172"], ["186.65", "520"], ["186.64", "709"], ["186.63", "81"], ["186.62", "161"], ["186.61", "781"], ["186.60", "741"], ["186.59", "743"], ["186.58", "758"], ["186.57", "372"]] as Level[],
  asks: [["186.67", "770"], ["186.68", "470"], ["186.69", "577"], ["186.70", "540"], ["186.71", "245"], ["186.72", "785"], ["186.73", "671"], ["186.74", "617"], ["186.75", "176"], ["186.76", "518"]] as Level[],
  checksum: 2718752084,
};
const UPDATE = {
  bids: [["186.66", "0"], ["186.62", "157"], ["186.61", "694"], ["186.56", "565"]] as Level[],
  asks: [["186.66", "691"], ["186.70", "373"], ["186.71", "463"], ["186.73", "709"], ["186.76", "0"]] as Level[],
  checksum: 1147012927,
};

describe("Book", () => {
  it("applies the protocol's example snapshot and update", () => {
    const book = new Book();
    expect(book.apply(SNAPSHOT, true)).toBe(true);
    expect(book.apply(UPDATE, false)).toBe(true);
    expect(book.bids[0]).toEqual(["186.65", "520"]);
    expect(book.asks[0]).toEqual(["186.66", "691"]);
    expect(book.bids.length).toBe(10);
    expect(book.asks.length).toBe(10);
    expect(book.asks.at(-1)).toEqual(["186.75", "176"]);
  });

  it("notices a wrong book", () => {
    const book = new Book();
    book.apply(SNAPSHOT, true);
    expect(book.apply({ ...UPDATE, bids: UPDATE.bids.slice(1) }, false)).toBe(false);
  });
});

const msg = (type: "snapshot" | "update", seq: number, data: object): DataMessage =>
  ({ type, channel: "book", symbol: "AAPL", seq, ts: 0, data }) as DataMessage;

describe("Market's ladder", () => {
  it("verifies each message, resyncs on a mismatch and counts resets", () => {
    const market = new Market();
    const asked: string[] = [];
    market.onMismatch = (s) => asked.push(s);
    market.apply(msg("snapshot", 1, SNAPSHOT));
    market.apply(msg("update", 2, UPDATE));
    const ladder = market.ladders.get("AAPL")!;
    expect([ladder.verified, ladder.mismatches, ladder.stale]).toEqual([2, 0, false]);

    market.apply(msg("update", 3, { bids: [], asks: [], checksum: 1 }));
    expect([ladder.mismatches, ladder.stale, asked]).toEqual([1, true, ["AAPL"]]);
    // Updates in flight are ignored until the snapshot replaces the book.
    market.apply(msg("update", 4, UPDATE));
    expect(ladder.verified).toBe(2);
    market.apply(msg("snapshot", 5, SNAPSHOT));
    expect([ladder.verified, ladder.stale, ladder.resyncs]).toEqual([3, false, 1]);

    // A reset from the source replaces the book in sequence.
    market.apply(msg("snapshot", 6, { ...SNAPSHOT, reset: true }));
    expect([ladder.verified, ladder.resyncs, ladder.seq]).toEqual([4, 2, 6]);
  });
});

describe("a stale source", () => {
  it("marks the ladder until the stream is live again", () => {
    const market = new Market();
    market.apply(msg("snapshot", 1, SNAPSHOT));
    market.setStatus("book:AAPL", false);
    expect(market.ladders.get("AAPL")!.sourceDown).toBe(true);
    market.setStatus("ticker:AAPL", true);
    expect(market.ladders.get("AAPL")!.sourceDown).toBe(true);
    market.setStatus("book:AAPL", true);
    expect(market.ladders.get("AAPL")!.sourceDown).toBe(false);
  });
});
