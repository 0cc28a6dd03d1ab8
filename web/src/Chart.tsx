import { useEffect, useRef, useState } from "react";
import {
  CandlestickSeries,
  ColorType,
  createChart,
  HistogramSeries,
  type IChartApi,
  type ISeriesApi,
  type UTCTimestamp,
} from "lightweight-charts";
import type { Candle } from "./feed";
import type { Market, Quote } from "./market";
import { formatChange } from "./market";
import { api } from "./App";

export type Interval = "1s" | "1m";

const UP = "#22c55e";
const DOWN = "#ef4444";

function bar(c: Candle) {
  return {
    time: Math.floor(c.start / 1_000_000) as UTCTimestamp,
    open: Number(c.open),
    high: Number(c.high),
    low: Number(c.low),
    close: Number(c.close),
  };
}

function volume(c: Candle) {
  return {
    time: Math.floor(c.start / 1_000_000) as UTCTimestamp,
    value: Number(c.volume),
    color: Number(c.close) >= Number(c.open) ? "rgba(34,197,94,0.35)" : "rgba(239,68,68,0.35)",
  };
}

/** Candles of one symbol: history over REST, then live updates from the feed. */
export function Chart({
  market,
  symbol,
  interval,
  onInterval,
  refetch,
  quote,
}: {
  market: Market;
  symbol: string;
  interval: Interval;
  onInterval: (i: Interval) => void;
  refetch: number;
  quote: Quote | undefined;
}) {
  const box = useRef<HTMLDivElement>(null);
  const chart = useRef<IChartApi | null>(null);
  const candles = useRef<ISeriesApi<"Candlestick"> | null>(null);
  const volumes = useRef<ISeriesApi<"Histogram"> | null>(null);
  const [bars, setBars] = useState(0);

  useEffect(() => {
    if (!box.current) return;
    const c = createChart(box.current, {
      autoSize: true,
      layout: { background: { type: ColorType.Solid, color: "transparent" }, textColor: "#9aa4b2", fontFamily: "inherit", attributionLogo: false },
      grid: { vertLines: { color: "rgba(148,163,184,0.08)" }, horzLines: { color: "rgba(148,163,184,0.08)" } },
      timeScale: { timeVisible: true, secondsVisible: true, borderColor: "rgba(148,163,184,0.2)", barSpacing: 9, rightOffset: 4 },
      rightPriceScale: { borderColor: "rgba(148,163,184,0.2)" },
      crosshair: { mode: 0 },
    });
    candles.current = c.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    volumes.current = c.addSeries(HistogramSeries, { priceScaleId: "volume", priceFormat: { type: "volume" } });
    c.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    chart.current = c;
    return () => {
      c.remove();
      chart.current = null;
    };
  }, []);

  // History, on every symbol or interval change and after a stream could not resume.
  useEffect(() => {
    let cancelled = false;
    let last = 0;
    const unsubscribe = market.onCandle((s, c) => {
      if (s !== symbol || c.interval !== interval || !candles.current || !volumes.current) return;
      const b = bar(c);
      if (b.time < last) return; // an older bar: the chart only moves forward
      last = b.time;
      candles.current.update(b);
      volumes.current.update(volume(c));
      setBars((n) => (n === 0 ? 1 : n));
    });
    candles.current?.setData([]);
    volumes.current?.setData([]);
    setBars(0);
    fetch(api(`/api/v1/candles/${encodeURIComponent(symbol)}?interval=${interval}&limit=${interval === "1s" ? 300 : 120}`))
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((body: { candles: Candle[] }) => {
        if (cancelled || !candles.current || !volumes.current) return;
        const known = body.candles.map(bar);
        // Live updates may already be ahead of the history.
        const merged = known.filter((b) => b.time <= last || last === 0);
        if (merged.length) {
          candles.current.setData(merged);
          volumes.current.setData(body.candles.filter((c) => bar(c).time <= last || last === 0).map(volume));
          last = Math.max(last, merged[merged.length - 1].time);
          setBars(merged.length);
        }
        chart.current?.timeScale().scrollToRealTime();
      })
      .catch(() => {
        /* the live stream still fills the chart */
      });
    return () => {
      cancelled = true;
      unsubscribe();
    };
  }, [market, symbol, interval, refetch]);

  const t = quote?.ticker;
  return (
    <section className="chart" aria-label={`${symbol} chart`}>
      <div className="chart-head">
        <h2>
          {symbol}
          {t && (
            <>
              <span className="price">{t.last}</span>
              <span className={Number(t.change) < 0 ? "down" : "up"}>{formatChange(t.change, t.open)}</span>
            </>
          )}
        </h2>
        <div className="intervals" role="group" aria-label="Candle interval">
          {(["1s", "1m"] as Interval[]).map((i) => (
            <button key={i} type="button" aria-pressed={i === interval} onClick={() => onInterval(i)}>
              {i}
            </button>
          ))}
        </div>
      </div>
      <div className="chart-box" ref={box} data-bars={bars} />
    </section>
  );
}
