"""``heedful serve`` against hostile clients on loopback.

    python benchmarks/hostile_clients.py [--requests 10000] [--concurrency 256] [--threads 2]

Starts ``heedful serve bible-es-en`` as a subprocess and sends ``--requests`` requests over raw
TCP (asyncio streams, so a request can be as wrong as a client can make it) from at most
``--concurrency`` clients at once:

* 88% well-formed ``POST /translate`` of one test verse (beam 1): their latency is reported;
* 10% malformed, in equal parts: invalid JSON, wrong types, invalid UTF-8, a 10 MB body, a
  100,000-character text;
* 1% slow clients that send their body a byte at a time (5 ms apart);
* 1% clients that send half their body and hang up.

Meanwhile a probe asks ``GET /health`` every 0.5 s. Prints one JSON object: requests per
kind and the status codes they got, 5xx other than the documented 504, whether every probe
answered and the slowest probe, p50/p99 of the well-formed requests, requests per second,
the server's peak resident memory (VmHWM) and whether it still answers afterwards (no worker
stuck). Figures go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

WELL_FORMED, SLOW, HANG_UP = "well-formed", "slow body", "hang-up"
MALFORMED = ("invalid JSON", "wrong types", "invalid UTF-8", "10 MB body", "100k-char text")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(body: bytes, path: str = "/translate") -> tuple[bytes, bytes]:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head, body


def body_of(kind: str, text: str) -> bytes:
    if kind in (WELL_FORMED, SLOW, HANG_UP):
        return json.dumps({"texts": [text], "beam_size": 1}).encode()
    if kind == "invalid JSON":
        return b'{"texts": ["' + text.encode() + b'", }'
    if kind == "wrong types":
        return json.dumps({"texts": "not a list", "beam_size": "five"}).encode()
    if kind == "invalid UTF-8":
        return b'{"texts": ["se\xc3\x28al \xff"]}'
    if kind == "10 MB body":
        return json.dumps({"texts": ["a" * 10_000_000]}).encode()
    return json.dumps({"texts": ["palabra " * 12_500]}).encode()  # 100,000 characters


async def send_one(port: int, kind: str, text: str) -> tuple[int | None, float]:
    """One request; (status or None when the client hung up, seconds)."""
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head, body = request_bytes(body_of(kind, text))
        writer.write(head)
        if kind == SLOW:
            for i in range(len(body)):
                writer.write(body[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0.005)
        elif kind == HANG_UP:
            writer.write(body[: len(body) // 2])
            await writer.drain()
            return None, time.perf_counter() - start
        else:
            writer.write(body)
        await writer.drain()
        status_line = await reader.readline()
        await reader.read()  # the rest of the response, until the server closes
        status = int(status_line.split()[1]) if status_line else -1
        return status, time.perf_counter() - start
    except (ConnectionError, OSError):
        return -2, time.perf_counter() - start
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def probe_health(port: int, stop: asyncio.Event, record: list[float | None]) -> None:
    """GET /health every 0.5 s until ``stop``; each probe's seconds (None: no answer in 10 s)."""
    while not stop.is_set():
        start = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 10)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            record.append(time.perf_counter() - start if b" 200 " in line else None)
        except (TimeoutError, ConnectionError, OSError):
            record.append(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def attack(port: int, requests: int, concurrency: int, texts: list[str]
                 ) -> dict[str, object]:
    rng = random.Random(0)
    kinds = []
    for i in range(requests):
        r = rng.random()
        kinds.append(WELL_FORMED if r < 0.88 else SLOW if r < 0.89 else HANG_UP if r < 0.90
                     else MALFORMED[i % len(MALFORMED)])
    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    stop = asyncio.Event()
    probes: list[float | None] = []
    prober = asyncio.create_task(probe_health(port, stop, probes))

    async def one(i: int) -> None:
        async with limit:
            status, seconds = await send_one(port, kinds[i], texts[i % len(texts)])
        statuses[kinds[i]][str(status)] += 1
        if kinds[i] == WELL_FORMED and status == 200:
            latencies.append(seconds)

    start = time.perf_counter()
    await asyncio.gather(*[one(i) for i in range(requests)])
    wall = time.perf_counter() - start
    stop.set()
    await prober
    after, _ = await send_one(port, WELL_FORMED, texts[0])
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100) if len(ms) > 1 else [0.0] * 99
    server_errors = sum(n for counts in statuses.values() for code, n in counts.items()
                        if code.startswith("5") and code != "504")
    answered = [p for p in probes if p is not None]
    return {"requests": requests, "concurrency": concurrency,
            "by_kind": {k: dict(v) for k, v in sorted(statuses.items())},
            "server_errors_5xx_not_504": server_errors,
            "health_probes": len(probes), "health_unanswered": len(probes) - len(answered),
            "health_slowest_ms": round(1000 * max(answered), 1) if answered else None,
            "well_formed_p50_ms": round(q[49], 1), "well_formed_p99_ms": round(q[98], 1),
            "requests_per_s": round(requests / wall, 1), "wall_s": round(wall, 1),
            "answers_afterwards": after == 200}


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bible-es-en")
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    from heedful.data import read_lines
    from heedful.datasets import dataset_split

    texts = read_lines(dataset_split("bible-es-en", "test")[0])[:200]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "heedful", "serve", args.model, "--port",
                             str(port), "--threads", str(args.threads)])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.2)
        idle_rss = peak_rss_mb(proc.pid)
        report = asyncio.run(attack(port, args.requests, args.concurrency, texts))
        report.update({"model": args.model, "threads": args.threads,
                       "server_rss_mb_after_start": idle_rss,
                       "server_peak_rss_mb": peak_rss_mb(proc.pid),
                       "cpu": platform.processor() or _cpu_name(),
                       "date": time.strftime("%Y-%m-%d")})
    finally:
        proc.terminate()
        proc.wait(30)
    print(json.dumps(report))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
