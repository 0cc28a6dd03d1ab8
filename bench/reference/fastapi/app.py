"""The second reference the issue names: an idiomatic FastAPI + uvicorn WebSocket fan-out with
tickstream's point workload. Each event is serialized once and awaited into every subscriber's
socket. Same subset of the protocol as the Node reference: `/ws?symbols=A,B&channels=ticker`,
ticker updates of tickstream's shape and size, `/readyz`.

    .venv-bench/bin/uvicorn --app-dir bench/reference/fastapi app:app --port PORT --log-level warning
"""

import asyncio
import json
import os
import random
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "SPY", "BTC-USD", "ETH-USD", "SOL-USD"]
RATE = int(os.environ.get("REFERENCE_RATE", "100"))


class Stream:
    def __init__(self, i: int) -> None:
        self.subscribers: set[WebSocket] = set()
        self.seq = 0
        self.last = self.open = 100.0 + 37 * i
        self.volume = 100_000_000


streams = {s: Stream(i) for i, s in enumerate(SYMBOLS)}


async def send(ws: WebSocket, msg: str) -> None:
    try:
        await ws.send_text(msg)
    except Exception:  # a closing client: its own handler removes it
        pass


async def ticker() -> None:
    period = 1 / RATE
    next_at = time.monotonic() + period
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += period
        ts = time.time_ns() // 1000
        for symbol, st in streams.items():
            st.seq += 1
            st.last = max(0.01, st.last * (1 + (random.random() - 0.5) * 0.0008))
            st.volume += random.randrange(50)
            msg = json.dumps(
                {
                    "type": "update",
                    "channel": "ticker",
                    "symbol": symbol,
                    "seq": st.seq,
                    "ts": ts,
                    "data": {
                        "bid": f"{st.last - 0.01:.2f}",
                        "ask": f"{st.last + 0.01:.2f}",
                        "last": f"{st.last:.2f}",
                        "open": f"{st.open:.2f}",
                        "change": f"{st.last - st.open:.2f}",
                        "volume": str(st.volume),
                    },
                },
                separators=(",", ":"),
            )
            await asyncio.gather(*(send(ws, msg) for ws in st.subscribers))


@asynccontextmanager
async def lifespan(_: FastAPI):
    task = asyncio.create_task(ticker())
    yield
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.get("/readyz")
async def readyz() -> dict:
    return {"status": "ready"}


@app.websocket("/ws")
async def ws_endpoint(websocket: WebSocket, symbols: str = "", channels: str = "ticker") -> None:
    await websocket.accept()
    mine = [streams[s] for s in symbols.split(",") if s in streams]
    for st in mine:
        st.subscribers.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        for st in mine:
            st.subscribers.discard(websocket)
