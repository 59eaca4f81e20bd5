#!/usr/bin/env bash
# heedful on one CUDA GPU, at most ~5 minutes, from the repository root (docs/gpu.md: the wheels in .whl/).
#   1. the `cuda` tests (pytest -m cuda): CPU-vs-GPU parity per architecture, exact resume, decoding parity, nccl
#   2. training speed: `heedful bench --device cuda` for the bench Transformer and a Transformer-base shape
#      (6+6 layers, d_model 512, 8 heads, ff 2048, 16k-token batches) in fp32 / bf16 / fp16: tokens/s,
#      FLOPs per target token, MFU against the GPU's data-sheet dense peak
#   3. beam-5 decoding of the bible-es-en test set with the shipped model on the GPU, and of its first
#      $CPU_LIMIT verses on the GPU and on 2 of this machine's CPU threads in the same run (ratio, BLEUs)
# Writes report.json, summary.txt, pytest.txt and bench-*.json to $OUT (default /tmp/gpu_check/out).
set -uo pipefail
cd "${REPO:-$PWD}" && [ -f heedful/presets.py ] || { echo "run from the heedful checkout"; exit 2; }
O=${OUT:-/tmp/gpu_check/out}; mkdir -p "$O"; export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}; STEPS=${STEPS:-20}; WARMUP=${WARMUP:-5}; CPU_LIMIT=${CPU_LIMIT:-500}
log() { echo "== $*" | tee -a "$O/summary.txt"; }
{ nvidia-smi | sed -n 3p; nvidia-smi -L; } 2>&1 | tee -a "$O/summary.txt"

# 0. The GPU machine has no network and its own torch (2.11 + CUDA when last seen): use it. What it lacks
#    (pydantic and its three helpers) travels as wheels in .whl/; heedful runs from the checkout, not
#    installed (its torch==2.13.0 pin would refuse the machine's torch).
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! $PY -c 'import torch, heedful.cli; assert torch.cuda.is_available(), f"torch {torch.__version__}: no GPU"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 | tee -a "$O/summary.txt"
then log "FAIL: torch without CUDA, or heedful not importable (missing wheels in .whl/?)"; exit 1; fi

# 1. the cuda tests (the rest of the suite is the CPU machine's job)
timeout 90 $PY -m pytest -q -p no:cacheprovider -m cuda tests/ >"$O/pytest.txt" 2>&1
log "pytest -m cuda: exit $?: $(tail -1 "$O/pytest.txt")"

# 2. training speed per shape and precision; each its own process (its own peak memory)
for SHAPE in transformer transformer-base; do for P in bf16 fp32 fp16; do
  s=$SECONDS; [ $SECONDS -lt 220 ] || { log "bench $SHAPE $P: skipped (time)"; continue; }
  timeout 45 $PY -m heedful bench --device cuda --only $SHAPE --precision $P --steps $STEPS \
    --warmup $WARMUP --json >"$O/bench-$SHAPE-$P.json" 2>"$O/bench-$SHAPE-$P.err"
  log "bench $SHAPE $P: exit $?, $((SECONDS - s)) s: $(tail -c 400 "$O/bench-$SHAPE-$P.json" 2>/dev/null) $(tail -2 "$O/bench-$SHAPE-$P.err")"
done; done

# 3. beam 5: the whole test set on the GPU; the first $CPU_LIMIT verses on the GPU and on 2 CPU threads
timeout 100 $PY - "$O" "$CPU_LIMIT" <<'EOF' 2>&1 | tee -a "$O/summary.txt"
import json, sys, time
from pathlib import Path
import torch
from heedful.analysis.metrics import score_corpus
from heedful.data import load_split
from heedful.decoding.translator import Translator

out, limit = Path(sys.argv[1]), int(sys.argv[2])
report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}


def beam5(t, sources, refs, device, threads):
    t.translate_lines(sources[:64], beam_size=5)  # warm-up (kernels, caches)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    hyps = t.translate_lines(sources, beam_size=5)
    seconds = time.perf_counter() - start
    return {"sentences": len(hyps), "seconds": round(seconds, 2),
            "sent_per_s": round(len(hyps) / seconds, 1),
            "bleu": round(score_corpus(hyps, refs).bleu, 2), "threads": threads}


for key, device, threads, whole in (("beam5_test_cuda", "cuda", None, True),
                                    ("beam5_first_cuda", "cuda", None, False),
                                    ("beam5_first_cpu", "cpu", 2, False)):
    try:
        if threads:
            torch.set_num_threads(threads)
        t = Translator.from_checkpoint("heedful/pretrained/bible-es-en", device=device)
        test = load_split(t.config.data, "test")
        n = len(test.src) if whole else limit
        report[key] = beam5(t, test.src[:n], test.tgt[:n], device, threads)
    except Exception as err:  # reported, and the rest still runs
        report[key] = f"FAIL {type(err).__name__}: {str(err)[:300]}"
    print(key, "->", report[key], flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
gpu, cpu = report.get("beam5_first_cuda"), report.get("beam5_first_cpu")
if isinstance(gpu, dict) and isinstance(cpu, dict):
    report["beam5_gpu_over_2_cpu_threads"] = round(gpu["sent_per_s"] / cpu["sent_per_s"], 1)
    print("GPU / 2 CPU threads (same verses):", report["beam5_gpu_over_2_cpu_threads"])
for path in sorted(out.glob("bench-*.json")):
    try:
        report[path.stem] = json.loads(path.read_text())
    except ValueError:
        report[path.stem] = "FAIL (no JSON; see the .err beside it)"
(out / "report.json").write_text(json.dumps(report, indent=1))
EOF
log "done in ${SECONDS}s; results in $O (report.json, summary.txt, pytest.txt, bench-*.json)"
