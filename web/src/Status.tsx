import { useEffect, useState } from "react";
import type { ConnectionState, Feed } from "./feed";

/** The connection as a person needs it: live, or when the next attempt is. */
export function Status({ state, feed }: { state: ConnectionState; feed: Feed }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (state.kind !== "waiting") return;
    const t = setInterval(() => setNow(Date.now()), 250);
    return () => clearInterval(t);
  }, [state]);
  let label: string;
  switch (state.kind) {
    case "live":
      label = "Live";
      break;
    case "connecting":
      label = state.attempt ? `Reconnecting (attempt ${state.attempt + 1})` : "Connecting";
      break;
    case "waiting":
      label = `Disconnected: ${state.reason}; retry in ${Math.max(0, Math.ceil((state.retryAt - now) / 1000))} s`;
      break;
    case "stopped":
      label = "Stopped";
      break;
  }
  const p = feed.positions;
  return (
    <div className={`status status-${state.kind}`} role="status" aria-live="polite" data-state={state.kind}>
      <span className="dot" aria-hidden="true" />
      <span>{label}</span>
      <span className="counters" title="reconnects / updates lost (gaps) / streams that could not resume">
        {feed.reconnects} reconnect{feed.reconnects === 1 ? "" : "s"} · {p.missed} lost · {feed.resets} reset
      </span>
    </div>
  );
}
