import type { Level } from "./book";
import type { Market } from "./market";

const ROWS = 10;

/** Cumulative sizes down each side, as numbers for the depth bars. */
function cumulative(levels: Level[]): number[] {
  let sum = 0;
  return levels.map(([, size]) => (sum += Number(size)));
}

/** The depth ladder: asks above (best at the bottom), bids below, with cumulative depth; every
 * message is checked against its checksum before it is shown. */
export function Ladder({ market, symbol }: { market: Market; symbol: string }) {
  const ladder = market.ladders.get(symbol);
  const bids = ladder?.book.bids.slice(0, ROWS) ?? [];
  const asks = ladder?.book.asks.slice(0, ROWS) ?? [];
  const bidDepth = cumulative(bids);
  const askDepth = cumulative(asks);
  const max = Math.max(bidDepth.at(-1) ?? 0, askDepth.at(-1) ?? 0) || 1;
  const spread = bids.length && asks.length ? (Number(asks[0][0]) - Number(bids[0][0])).toFixed(asks[0][0].split(".")[1]?.length ?? 0) : "—";
  const row = (side: "bid" | "ask", [price, size]: Level, depth: number) => (
    <tr key={`${side}${price}`} className={side} data-testid={side}>
      <td className="num price">{price}</td>
      <td className="num">{size}</td>
      <td className="num depth" data-depth={depth}>
        <span className="bar" style={{ width: `${(depth / max) * 100}%` }} />
        <span>{formatDepth(depth)}</span>
      </td>
    </tr>
  );
  const status = !ladder ? "waiting" : ladder.sourceDown ? "source-down" : ladder.stale ? "resyncing" : "verified";
  return (
    <section className="ladder" aria-label={`Order book of ${symbol}`} data-state={status}>
      <div className="ladder-head">
        <h2>Book</h2>
        <span className={`check ${status}`} data-testid="book-status">
          {status === "verified"
            ? `✓ checksum (${ladder?.verified} msgs)`
            : status === "resyncing"
              ? "⟳ resyncing"
              : status === "source-down"
                ? "⚠ source down: last book shown"
                : "…"}
          {ladder && ladder.resyncs > 0 && <span data-testid="book-resyncs"> · {ladder.resyncs} resync{ladder.resyncs > 1 ? "s" : ""}</span>}
        </span>
      </div>
      <table>
        <thead>
          <tr>
            <th scope="col" className="num">
              Price
            </th>
            <th scope="col" className="num">
              Size
            </th>
            <th scope="col" className="num">
              Total
            </th>
          </tr>
        </thead>
        <tbody>
          {asks.map((l, i) => ({ l, d: askDepth[i] })).reverse().map(({ l, d }) => row("ask", l, d))}
          <tr className="spread">
            <td colSpan={3}>spread {spread}</td>
          </tr>
          {bids.map((l, i) => row("bid", l, bidDepth[i]))}
        </tbody>
      </table>
    </section>
  );
}

function formatDepth(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}K`;
  return String(Math.round(n * 1e4) / 1e4);
}
