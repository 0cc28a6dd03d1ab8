// An order book as docs/protocol.md tells a client to keep it: a snapshot replaces it, an
// update sets each listed level's size ("0" removes the level), and after every message the
// CRC32 of the top ten levels a side must equal the message's checksum. Prices stay the
// strings the server sent (the checksum is over the printed digits); they are ordered by value.

export type Level = [price: string, size: string];

export interface BookData {
  bids: Level[];
  asks: Level[];
  checksum: number;
  reset?: boolean;
}

/** Compares two non-negative decimal strings by value ("1.5" equals "1.50"). */
export function cmpDecimal(a: string, b: string): number {
  const [ai, af = ""] = a.split(".");
  const [bi, bf = ""] = b.split(".");
  const aInt = ai.replace(/^0+/, "");
  const bInt = bi.replace(/^0+/, "");
  if (aInt.length !== bInt.length) return aInt.length < bInt.length ? -1 : 1;
  if (aInt !== bInt) return aInt < bInt ? -1 : 1;
  const width = Math.max(af.length, bf.length);
  const aFrac = af.padEnd(width, "0");
  const bFrac = bf.padEnd(width, "0");
  return aFrac === bFrac ? 0 : aFrac < bFrac ? -1 : 1;
}

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC32 (IEEE 802.3, zlib's) of an ASCII string, unsigned. */
export function crc32(text: string): number {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const digits = (d: string) => d.replace(".", "").replace(/^0+/, "");

/** The book checksum of docs/protocol.md: top ten asks up, then top ten bids down. */
export function checksum(bids: Level[], asks: Level[]): number {
  let s = "";
  for (const [p, q] of asks.slice(0, 10)) s += digits(p) + digits(q);
  for (const [p, q] of bids.slice(0, 10)) s += digits(p) + digits(q);
  return crc32(s);
}

function setLevel(side: Level[], level: Level, bids: boolean) {
  const [price, size] = level;
  // Bids are kept highest first, asks lowest first.
  const before = (p: string) => (bids ? cmpDecimal(p, price) > 0 : cmpDecimal(p, price) < 0);
  let lo = 0;
  let hi = side.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (before(side[mid][0])) lo = mid + 1;
    else hi = mid;
  }
  const found = lo < side.length && cmpDecimal(side[lo][0], price) === 0;
  const remove = cmpDecimal(size, "0") === 0;
  if (found && remove) side.splice(lo, 1);
  else if (found) side[lo] = level;
  else if (!remove) side.splice(lo, 0, level);
}

export class Book {
  bids: Level[] = [];
  asks: Level[] = [];

  /** Applies a message; returns whether the checksum then matches. */
  apply(data: BookData, replace: boolean): boolean {
    if (replace) {
      this.bids = [];
      this.asks = [];
    }
    for (const l of data.bids) setLevel(this.bids, l, true);
    for (const l of data.asks) setLevel(this.asks, l, false);
    return checksum(this.bids, this.asks) === data.checksum;
  }
}
