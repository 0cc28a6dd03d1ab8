import { useEffect, useMemo, useState, useSyncExternalStore } from "react";
import { Feed, type Channel, type ConnectionState } from "./feed";
import { Market } from "./market";
import { Board } from "./Board";
import { Chart, type Interval } from "./Chart";
import { Tape } from "./Tape";
import { Ladder } from "./Ladder";
import { Status } from "./Status";

/** `?token=KEY` in the page's URL is passed on to the API and the WebSocket. */
const token = new URLSearchParams(location.search).get("token");
const withToken = (url: string) => (token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url);
export const api = (path: string) => withToken(path);
const wsUrl = withToken(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);

declare global {
  interface Window {
    /** Read-only counters for the browser tests and for the curious. */
    __tickstream?: { feed: Feed; market: Market };
  }
}

export function App() {
  const market = useMemo(() => new Market(), []);
  const [state, setState] = useState<ConnectionState>({ kind: "connecting", attempt: 0 });
  const [symbols, setSymbols] = useState<string[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<string | null>(() => decodeURIComponent(location.hash.slice(1)) || null);
  const [interval, setInterval] = useState<Interval>("1s");
  const [resets, setResets] = useState(0);

  const feed = useMemo(
    () =>
      new Feed({
        url: wsUrl,
        onData: (msg) => market.apply(msg),
        onState: setState,
        onReset: () => setResets((n) => n + 1),
        onStatus: (key, live) => market.setStatus(key, live),
      }),
    [market],
  );

  useEffect(() => {
    // A book that fails its checksum is dropped and fetched again as a snapshot.
    market.onMismatch = () => feed.resync("ladder");
    window.__tickstream = { feed, market };
    feed.start();
    return () => feed.stop();
  }, [feed, market]);

  // The symbol list, retried until the server answers.
  useEffect(() => {
    let cancelled = false;
    let timer: ReturnType<typeof setTimeout>;
    const load = async (attempt: number) => {
      try {
        const r = await fetch(api("/api/v1/symbols"));
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        const body = (await r.json()) as { symbols: string[] };
        if (!cancelled) {
          setSymbols(body.symbols);
          setError(null);
        }
      } catch (e) {
        if (cancelled) return;
        setError(`cannot list symbols: ${String(e)}`);
        timer = setTimeout(() => load(attempt + 1), Math.min(10_000, 500 * 2 ** attempt));
      }
    };
    load(0);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }, []);

  const symbol = selected && symbols.includes(selected) ? selected : symbols[0];

  useEffect(() => {
    if (symbols.length) feed.subscribe("board", symbols, ["ticker"]);
  }, [feed, symbols]);

  useEffect(() => {
    if (!symbol) return;
    const channels: Channel[] = [interval === "1s" ? "candles_1s" : "candles_1m", "trades"];
    market.clearTape();
    feed.subscribe("focus", [symbol], channels);
    history.replaceState(null, "", `${location.pathname}${location.search}#${encodeURIComponent(symbol)}`);
  }, [feed, market, symbol, interval]);

  useEffect(() => {
    if (symbol) feed.subscribe("ladder", [symbol], ["book"]);
  }, [feed, symbol]);

  useSyncExternalStore(market.subscribe, market.snapshot);

  return (
    <div className="app">
      <header>
        <h1>
          <span className="logo" aria-hidden="true">
            ◢
          </span>
          tickstream
        </h1>
        <Status state={state} feed={feed} />
      </header>
      {error && <div className="banner">{error}</div>}
      <main>
        <Board market={market} symbols={symbols} selected={symbol} onSelect={setSelected} />
        <section className="focus">
          {symbol && (
            <>
              <Chart
                market={market}
                symbol={symbol}
                interval={interval}
                onInterval={setInterval}
                refetch={resets}
                quote={market.quotes.get(symbol)}
              />
              <div className="below">
                <Ladder market={market} symbol={symbol} />
                <Tape market={market} symbol={symbol} />
              </div>
            </>
          )}
        </section>
      </main>
    </div>
  );
}
