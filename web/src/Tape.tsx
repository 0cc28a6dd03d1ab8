import type { Market } from "./market";
import { formatTime } from "./market";

export function Tape({ market, symbol }: { market: Market; symbol: string }) {
  const prints = market.tape.filter((p) => p.symbol === symbol).slice(0, 30);
  return (
    <section className="tape" aria-label={`Trades in ${symbol}`}>
      <h2>Trades</h2>
      <ol>
        {prints.map((p) => (
          <li key={p.seq} className={p.side}>
            <time>{formatTime(p.ts)}</time>
            <span className="num">{p.price}</span>
            <span className="num size">{p.size}</span>
            <span className="side">{p.side}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}
