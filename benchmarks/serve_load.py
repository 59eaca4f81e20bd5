"""Load test of ``heedful serve`` on loopback, with and without micro-batching.

    python benchmarks/serve_load.py [--model bible-es-en] [--requests 1000] [--concurrency 32]

Starts ``heedful serve`` as a subprocess for each mode, sends ``--requests`` single-sentence
requests (bible-es-en test verses, in turn) from ``--concurrency`` concurrent clients over
TCP, and prints one JSON object: per mode, errors, p50/p90/p99 latency (ms), requests/s and
how many model calls (batches) served them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def load(url: str, texts: list[str], requests: int, concurrency: int,
               beam_size: int) -> dict[str, object]:
    latencies: list[float] = []
    errors: list[str] = []
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> None:
            async with limit:
                start = time.perf_counter()
                try:
                    r = await client.post("/translate", json={"texts": [texts[i % len(texts)]],
                                                              "beam_size": beam_size})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as err:
                    errors.append(repr(err))
                latencies.append(time.perf_counter() - start)

        await one(0)  # warm-up, not counted
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*[one(i) for i in range(requests)])
        wall = time.perf_counter() - start
        health = (await client.get("/health")).json()
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    return {"requests": requests, "concurrency": concurrency, "errors": len(errors),
            "error_examples": errors[:3], "p50_ms": round(q[49], 1), "p90_ms": round(q[89], 1),
            "p99_ms": round(q[98], 1), "requests_per_s": round(requests / wall, 1),
            "wall_s": round(wall, 2), "model_calls": sum(health["batches"].values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bible-es-en")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from heedful.data import read_lines
    from heedful.datasets import dataset_split

    texts = read_lines(dataset_split("bible-es-en", "test")[0])[:200]
    report: dict[str, object] = {"model": args.model, "beam_size": args.beam_size,
                                 "threads": args.threads}
    for mode, flags in (("micro_batching", []), ("no_micro_batching", ["--no-micro-batching"])):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "heedful", "serve", args.model, "--port",
                                 str(port), "--threads", str(args.threads), *flags])
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            report[mode] = asyncio.run(load(url, texts, args.requests, args.concurrency,
                                            args.beam_size))
        finally:
            proc.terminate()
            proc.wait(30)
        print(f"{mode}: {report[mode]}", file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
