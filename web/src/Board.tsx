import type { Market } from "./market";
import { formatChange, formatVolume } from "./market";

export function Board({
  market,
  symbols,
  selected,
  onSelect,
}: {
  market: Market;
  symbols: string[];
  selected: string | undefined;
  onSelect: (s: string) => void;
}) {
  return (
    <section className="board" aria-label="Ticker board">
      <table>
        <thead>
          <tr>
            <th scope="col">Symbol</th>
            <th scope="col" className="num">
              Last
            </th>
            <th scope="col" className="num">
              Change
            </th>
            <th scope="col" className="num wide">
              Bid
            </th>
            <th scope="col" className="num wide">
              Ask
            </th>
            <th scope="col" className="num wide">
              Volume
            </th>
          </tr>
        </thead>
        <tbody>
          {symbols.map((s) => {
            const q = market.quotes.get(s);
            const t = q?.ticker;
            const dir = t && Number(t.change) < 0 ? "down" : "up";
            return (
              <tr
                key={s}
                className={s === selected ? "selected" : undefined}
                onClick={() => onSelect(s)}
                data-symbol={s}
                tabIndex={0}
                onKeyDown={(e) => (e.key === "Enter" || e.key === " ") && onSelect(s)}
                aria-selected={s === selected}
              >
                <th scope="row">{s}</th>
                <td className="num last">
                  <span key={q?.ticks ?? 0} className={q && q.ticks ? `flash-${q.move}` : undefined} data-testid="last">
                    {t?.last ?? "—"}
                  </span>
                </td>
                <td className={`num ${dir}`}>{t ? formatChange(t.change, t.open) : "—"}</td>
                <td className="num wide">{t?.bid ?? "—"}</td>
                <td className="num wide">{t?.ask ?? "—"}</td>
                <td className="num wide">{t ? formatVolume(t.volume) : "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
