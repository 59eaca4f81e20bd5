"""Corpora larger than memory: prepare, training start-up and translate at growing sizes.

    python benchmarks/data_scale.py                              # 28k 1.4M 10M pairs
    python benchmarks/data_scale.py --sizes 28k 1.4M --translate-lines 10k 100k
    python benchmarks/data_scale.py --baseline /tmp/heedful-0.2.0   # + the old code at 28k

The corpora are bible-es-en's training split (28,067 pairs) replicated k times (28k = 1 copy,
1.4M = 50 copies, 10M = 357 copies), plain text under ``--work`` (deleted at the end unless
``--keep``). For each size:

* ``heedful prepare`` with 1 and with 2 worker processes, each into a fresh run directory:
  wall clock, peak RSS of the main process and of the largest worker (tokenizer training
  included: every prepare here trains its SentencePiece model from scratch);
* ``heedful train ... train.max_steps=STEPS`` on the store prepared with 1 worker (current, so
  only checked: the training files' and the store's sha256): wall clock from the launch to
  the end of the first update, peak RSS (and RssAnon / RssFile at the end: the mapped pages
  of the store count in RSS as file-backed, shared and reclaimable pages), and the median
  training tokens/s over the updates after the fifth;
* the data path's cost: in one process, ``--ab-steps`` updates read from the mapped store
  and, in lockstep, the same updates read from the store's arrays copied into memory (which
  goes first alternating): tokens/s of each, their ratio, and the ratio per fifth of the run.

Then ``heedful translate`` (greedy) with the model trained on the 28k corpus, on 10k / 100k /
1M lines (the training sources repeated): peak RSS and wall clock. ``--baseline DIR`` runs the
same training (28k) and translate (10k, 100k) commands with the code in DIR (e.g. ``git archive
v0.2.0``) on PYTHONPATH, for comparison.

Each command runs in its own process (``HEEDFUL_CPU_GEMM=mkl`` unless set: the ``auto`` choice
can differ from run to run on a loaded machine, and with it the memory); peak RSS is its
``ru_maxrss`` (and its children's). The
model is tiny (a GRU of 64 units, 4k joint BPE): the figures are about the data path. Prints
one JSON object (``-o`` also writes it to a file).

Run it niced on a shared machine. Where another user's timing runs stop every niced process
while they measure (SIGSTOP/SIGCONT), the clocks here leave those pauses out: a thread ticks
every 0.1 s and a gap of more than 1 s between ticks is not counted (``paused_s`` says how
much was left out); each command's figures are "active" seconds.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIBLE = ROOT / "heedful" / "datasets" / "bible_es_en"
SIZES = {"28k": 1, "280k": 10, "1.4M": 50, "10M": 357}
LINES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
MODEL = ["tokenizer.vocab_size=4000", "model.embed_dim=64", "model.hidden_dim=64",
         "train.batch_tokens=4096", "train.valid_every=100000", "train.log_every=1",
         "data.dev_limit=20", "decode.beam_size=1"]

# Runs one heedful command line in this process and reports its peak RSS (and its children's:
# prepare's workers) and its RssAnon/RssFile at the end, on the file descriptor REPORT_FD.
WRAPPER = """
import json, os, resource, sys
from heedful.cli import main
code = main(sys.argv[1:])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
kib = lambda key: int(status[key].split()[0])
report = {"code": code, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "children_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
          "rss_anon_mb": kib("RssAnon") / 1024, "rss_file_mb": kib("RssFile") / 1024}
with os.fdopen(int(os.environ["REPORT_FD"]), "w") as f:
    json.dump(report, f)
"""

# Training from the mapped store against training from the same arrays copied into memory, in
# one process, on the same batches: the two streams advance in lockstep, each update drawn from
# one and then the same update from the other (the order alternating), so that the machine's
# drifts fall on both alike; prints each side's time per update, after 5 warm-up updates.
DATA_PATH_AB = """
import json, sys, time
from pathlib import Path
import numpy as np
from heedful.batching import BatchStream
from heedful.config import load_config
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID
from heedful.training import distributed
from heedful.training.reporter import Reporter
from heedful.training.trainer import Trainer
run_dir, steps = Path(sys.argv[1]), int(sys.argv[2])
overrides = sys.argv[3:]
cfg = load_config(None, overrides)
with Reporter(run_dir, 0, False, False) as reporter:
    trainer = Trainer.setup(cfg, run_dir, distributed.setup("cpu", 60), reporter)
    mapped, store = trainer.stream, trainer.data.store
    memory = BatchStream(store.src.in_memory(), store.tgt.in_memory(), cfg.train.batch_tokens,
                         cfg.train.seed, PAD_ID, BOS_ID, EOS_ID, order=np.array(store.order),
                         sizes=np.array(store.sizes), prefetch=mapped.prefetch)
    times = {"mapped": [], "memory": []}
    tokens = []
    for i in range(steps + 5):
        for name, stream in [("mapped", mapped), ("memory", memory)][:: 1 if i % 2 else -1]:
            trainer.stream = stream
            start = time.perf_counter()
            num = trainer.train_step(trainer._draw()).num_tokens
            if i >= 5:
                times[name].append(time.perf_counter() - start)
        if i >= 5:
            tokens.append(num)
    mapped.close()
    memory.close()
print(json.dumps({"tokens": tokens, **times}))
"""


class ActiveClock:
    """Wall-clock time without the pauses when this process was stopped (see the module
    docstring): ``now()`` in active seconds, ``at(wall)`` for a past ``time.time()``."""

    def __init__(self, tick: float = 0.1, gap: float = 1.0) -> None:
        self.samples = [(time.time(), 0.0)]
        self.paused = 0.0
        self._tick, self._gap = tick, gap
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self._tick)
            now = time.time()
            last, active = self.samples[-1]
            if now - last < self._gap:
                active += now - last
            else:
                self.paused += now - last
            self.samples.append((now, active))

    def now(self) -> float:
        return self.at(time.time())

    def at(self, wall: float) -> float:
        i = bisect.bisect_right(self.samples, (wall, float("inf"))) - 1
        last, active = self.samples[max(i, 0)]
        return active + min(max(wall - last, 0.0), self._gap)


CLOCK = ActiveClock()


def run(argv: list[str], code_dir: Path = ROOT) -> dict[str, float]:
    """Run ``heedful ARGV`` in a fresh process; its report plus the active seconds."""
    read, write = os.pipe()
    # one GEMM backend for every run: "auto" times both and may pick either under load
    env = {**os.environ, "PYTHONPATH": str(code_dir), "REPORT_FD": str(write),
           "HEEDFUL_CPU_GEMM": os.environ.get("HEEDFUL_CPU_GEMM", "mkl")}
    start = time.time()
    active_start, paused_start = CLOCK.now(), CLOCK.paused
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], pass_fds=(write,),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=code_dir)
    os.close(write)
    with os.fdopen(read) as f:
        raw = f.read()
    out, err = proc.communicate()
    wall = CLOCK.now() - active_start
    if proc.returncode != 0 or not raw:
        raise RuntimeError(f"heedful {' '.join(argv)} failed:\n{out[-2000:]}\n{err[-3000:]}")
    report = json.loads(raw)
    report.update(start=start, seconds=round(wall, 2), stdout=out,
                  paused_s=round(CLOCK.paused - paused_start, 1))
    return report


def make_corpus(work: Path, copies: int) -> tuple[Path, Path, int]:
    """bible-es-en's training pairs ``copies`` times, as two plain text files."""
    folder = work / f"corpus-x{copies}"
    src, tgt = folder / "train.es", folder / "train.en"
    pairs = copies * 28_067
    if not (src.exists() and tgt.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        for side, path in (("es", src), ("en", tgt)):
            block = gzip.decompress((BIBLE / f"train.{side}.gz").read_bytes())
            with open(path, "wb") as f:
                for _ in range(copies):
                    f.write(block)
    return src, tgt, pairs


def data_overrides(src: Path, tgt: Path) -> list[str]:
    return ["data.dataset=null", f"data.train.src={src}", f"data.train.tgt={tgt}",
            f"data.dev.src={BIBLE / 'dev.es'}", f"data.dev.tgt={BIBLE / 'dev.en'}"]


def mb(report: dict[str, float], key: str) -> int:
    return round(report[key])


def bench_prepare(data: list[str], work: Path, name: str, worker_counts: list[int]
                  ) -> dict[str, object]:
    out: dict[str, object] = {}
    for workers in worker_counts:
        run_dir = work / f"run-{name}-w{workers}"
        shutil.rmtree(run_dir, ignore_errors=True)
        r = run(["prepare", *data, *MODEL, "--run-dir", str(run_dir), "--workers",
                 str(workers), "--json"])
        summary = json.loads(r["stdout"].strip().splitlines()[-1])
        out[f"workers_{workers}"] = {
            "seconds": r["seconds"], "peak_rss_mb": mb(r, "peak_rss_mb"),
            "worker_peak_rss_mb": mb(r, "children_peak_rss_mb") if workers > 1 else None,
            "pairs_kept": summary["pairs"], "store_mb": round(_du(run_dir / "prepared")),
            "paused_s": r["paused_s"]}
    w1, w2 = out.get("workers_1"), out.get("workers_2")
    if isinstance(w1, dict) and isinstance(w2, dict):
        out["speedup_2_workers"] = round(w1["seconds"] / w2["seconds"], 2)
    return out


def _du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def bench_train(data: list[str], run_dir: Path, steps: int, code_dir: Path = ROOT
                ) -> dict[str, object]:
    """Train ``steps`` updates in ``run_dir`` (its store, if any, already prepared)."""
    for stale in (run_dir / "checkpoints", run_dir / "train.log", run_dir / "metrics.jsonl"):
        if stale.is_dir():
            shutil.rmtree(stale)
        stale.unlink(missing_ok=True)
    r = run(["train", *data, *MODEL, f"train.max_steps={steps}", "--run-dir", str(run_dir),
             "--no-progress"], code_dir)
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    steps_logged = re.findall(r"^(\S+ \S+) INFO step (\d+) epoch \d+ loss \S+ tok/s (\d+)",
                              log, re.MULTILINE)
    first = dt.datetime.strptime(steps_logged[0][0], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    rates = [int(rate) for _, step, rate in steps_logged if int(step) > 5]
    return {"start_to_first_step_s": round(CLOCK.at(first) - CLOCK.at(r["start"]), 2),
            "peak_rss_mb": mb(r, "peak_rss_mb"), "rss_anon_mb_at_end": mb(r, "rss_anon_mb"),
            "rss_file_mb_at_end": mb(r, "rss_file_mb"),
            "tokens_per_s_median": round(statistics.median(rates)), "steps": steps,
            "seconds": r["seconds"], "paused_s": r["paused_s"]}


def bench_data_path(data: list[str], run_dir: Path, steps: int) -> dict[str, object]:
    """Training tokens/s from the mapped store against the same arrays in memory, same
    process, same updates in lockstep (:data:`DATA_PATH_AB`): over all ``steps`` updates and
    per block of a fifth of them (the spread)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "HEEDFUL_CPU_GEMM": os.environ.get("HEEDFUL_CPU_GEMM", "mkl")}
    out = subprocess.run([sys.executable, "-c", DATA_PATH_AB, str(run_dir), str(steps),
                          *data, *MODEL], env=env, capture_output=True, text=True, cwd=ROOT,
                         check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the data-path comparison failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    tokens, mapped, memory = r["tokens"], r["mapped"], r["memory"]
    block = max(len(tokens) // 5, 1)
    ratios = [sum(memory[a:a + block]) / sum(mapped[a:a + block])
              for a in range(0, len(tokens) - block + 1, block)]
    return {"updates": len(tokens),
            "mapped_tokens_per_s": round(sum(tokens) / sum(mapped)),
            "memory_tokens_per_s": round(sum(tokens) / sum(memory)),
            "mapped_over_memory": round(sum(memory) / sum(mapped), 3),
            "per_fifth": [round(x, 3) for x in ratios]}


def bench_translate(run_dir: Path, work: Path, lines: int, code_dir: Path = ROOT
                    ) -> dict[str, object]:
    src = work / f"input-{lines}.es"
    if not src.exists():
        text = gzip.decompress((BIBLE / "train.es.gz").read_bytes()).decode().splitlines()
        with open(src, "w", encoding="utf-8") as f:
            for i in range(lines):
                f.write(text[i % len(text)] + "\n")
    out = work / "translations.txt"
    r = run(["translate", str(run_dir), "-i", str(src), "-o", str(out), "--beam-size", "1",
             "--max-len-a", "0.5", "--max-len-b", "5", "--batch-size", "256"], code_dir)
    with open(out, encoding="utf-8") as f:
        produced = sum(1 for _ in f)
    assert produced == lines, (produced, lines)
    out.unlink()
    return {"lines": lines, "peak_rss_mb": mb(r, "peak_rss_mb"), "seconds": r["seconds"],
            "paused_s": r["paused_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["28k", "1.4M", "10M"], choices=SIZES)
    parser.add_argument("--translate-lines", nargs="*", default=["10k", "100k", "1M"],
                        choices=LINES)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2],
                        help="prepare with each of these worker counts (training uses the first "
                             "one's store)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/heedful-data-scale"))
    parser.add_argument("--ab-steps", type=int, default=200,
                        help="updates read from the mapped store and, in lockstep, from the "
                             "same arrays in memory (0: skip)")
    parser.add_argument("--baseline", type=Path, help="the code to compare with (a checkout)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and runs")
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, object] = {
        "corpus": "bible-es-en train (28,067 pairs) replicated: 28k = x1, 1.4M = x50, "
                  "10M = x357", "cpus": os.cpu_count(), "model": MODEL, "sizes": {},
        "load_average_at_start": os.getloadavg()}
    sizes: dict[str, object] = {}
    try:
        for name in args.sizes:
            src, tgt, pairs = make_corpus(args.work, SIZES[name])
            data = data_overrides(src, tgt)
            entry = {"pairs": pairs, "corpus_mb": round((src.stat().st_size
                                                         + tgt.stat().st_size) / 2**20),
                     "prepare": bench_prepare(data, args.work, name, args.workers)}
            for extra in args.workers[1:]:
                if name != "28k":
                    shutil.rmtree(args.work / f"run-{name}-w{extra}", ignore_errors=True)
            run_dir = args.work / f"run-{name}-w{args.workers[0]}"
            entry["train"] = bench_train(data, run_dir, args.steps)
            if args.ab_steps:
                entry["data_path"] = bench_data_path(data, run_dir, args.ab_steps)
            if args.baseline and name == "28k":
                entry["train_baseline"] = bench_train(data, args.work / "run-baseline",
                                                      args.steps, args.baseline)
            sizes[name] = entry
            print(json.dumps({name: entry}), file=sys.stderr, flush=True)
            if name != "28k":
                shutil.rmtree(run_dir, ignore_errors=True)
                shutil.rmtree(src.parent, ignore_errors=True)
        report["sizes"] = sizes
        model_run = args.work / f"run-28k-w{args.workers[0]}"
        if args.translate_lines and model_run.exists():
            report["translate"] = {n: bench_translate(model_run, args.work, LINES[n])
                                   for n in args.translate_lines}
            if args.baseline:
                report["translate_baseline"] = {
                    n: bench_translate(model_run, args.work, LINES[n], args.baseline)
                    for n in args.translate_lines if LINES[n] <= 100_000}
    finally:
        if not args.keep:
            shutil.rmtree(args.work, ignore_errors=True)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
