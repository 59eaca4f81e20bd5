#!/usr/bin/env bash
# heedful on one CUDA GPU (H200), ~5 min, from the repo root (see docs/gpu.md for the wheels in .whl/): install, CUDA check, bench-transformer in fp32/bf16/fp16
# (tok/s, dev BLEU, MFU vs 989 TFLOP/s dense bf16), beam-5 test decoding on the GPU, device probes, tests.
set -uo pipefail; cd "${REPO:-$PWD}" && [ -f heedful/presets.py ] || { echo "run from the heedful checkout"; exit 2; }
O=${OUT:-/tmp/gpu_check/out}; W=$(mktemp -d /tmp/heedful-gpu.XXXX); mkdir -p "$O"; export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}; STEPS=${STEPS:-150}; 
log() { echo "== $*" | tee -a "$O/summary.txt"; }; { nvidia-smi | sed -n 3p; nvidia-smi -L; } 2>&1 | tee -a "$O/summary.txt"
# 1. the GPU machine has no network and its own torch (2.11 + CUDA 13 when last seen): use it. Packages it lacks
#    (pydantic and its three helpers) travel as wheels in .whl/ (see README.md beside this script).
if ls .whl/*.whl >/dev/null 2>&1; then $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # heedful from the checkout, no install (its torch pin would refuse 2.11)
if ! $PY -c 'import torch, heedful.cli; assert torch.cuda.is_available(), f"torch {torch.__version__}: no GPU"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 | tee -a "$O/summary.txt"
then log "FAIL: torch without CUDA, or heedful not importable (missing wheels in .whl/?)"; exit 1; fi
# 2. bench-transformer (heedful/presets.py) on cuda; the fp32 run trains the tokenizer, the others reuse it
for P in fp32 bf16 fp16; do R=$W/$P; mkdir -p "$R"; [ $P = fp32 ] || cp "$W/fp32/spm.model" "$R/"; s=$SECONDS
  timeout 75 $PY -m heedful train --preset bench-transformer train.device=cuda train.precision=$P \
    train.max_steps=$STEPS train.valid_every=$STEPS train.log_every=25 --run-dir "$R" --no-progress >"$R/out" 2>&1
  rc=$?; log "train $P: exit $rc, $((SECONDS - s)) s: $(tail -1 "$R/out")"; cp "$R/metrics.jsonl" "$O/$P.metrics.jsonl"
  [ $rc = 0 ] || tail -12 "$R/out" | tee -a "$O/summary.txt"; done
# 3. probes; FLOPs per target token (heedful counts none: torch.utils.flop_counter here) and MFU; beam 5 on the GPU
timeout 100 $PY - "$W" "$O" 2>&1 <<'EOF' | tee -a "$O/summary.txt"
import itertools, json, statistics, sys, time, torch
from pathlib import Path; from torch.nn.attention import SDPBackend as B, sdpa_kernel; F = torch.nn.functional
from torch.utils.flop_counter import FlopCounterMode; from heedful import data, presets
from heedful.analysis import metrics as evaluate; from heedful.decoding import translator; from heedful.nn import architectures as model
from heedful.tokenizer import BOS_ID, EOS_ID, PAD_ID; from heedful.training.prepare import prepare_data
from heedful.training.step import loss_sum, to_device as _to_device
W, O, dev, rep = Path(sys.argv[1]), Path(sys.argv[2]), torch.device("cuda"), {}
def probe(name, fn):  # one result per name, the report rewritten after each
    try: rep[name] = fn()
    except Exception as e: rep[name] = f"FAIL {type(e).__name__}: {str(e)[:200]}"
    print(name, "->", rep[name], flush=True); (O / "report.json").write_text(json.dumps(rep, indent=1))
q = torch.randn(8, 4, 30, 64, device=dev, dtype=torch.bfloat16); mask = torch.rand(8, 1, 1, 30, device=dev) > .3
mask[..., 0] = True  # heedful's (B, 1, 1, S) bool key mask: flash cannot take it, mem-efficient should
probe("sdpa_efficient_mask", sdpa_kernel(B.EFFICIENT_ATTENTION)(lambda: str(F.scaled_dot_product_attention(q, q, q, mask).dtype)))
probe("sdpa_flash_causal", sdpa_kernel(B.FLASH_ATTENTION)(lambda: str(F.scaled_dot_product_attention(q, q, q, is_causal=True).dtype)))
probe("lstm_dtype_under_bf16_autocast", torch.autocast("cuda", torch.bfloat16)(  # the review expects float16 (cuDNN RNN)
    lambda: str(torch.nn.LSTM(64, 8).to(dev)(q[0, 0].float())[0].dtype)))
cfg = presets.get_preset("bench-transformer"); tc = cfg.train; d = prepare_data(cfg, W / "fp32"); fl = n = 0
m = model.build_model(cfg.model, d.tokenizer.src_vocab_size, d.tokenizer.tgt_vocab_size).to(dev).train()
for b in itertools.islice(data.BatchStream(d.train_src, d.train_tgt, tc.batch_tokens, tc.seed, PAD_ID, BOS_ID, EOS_ID), 20):
    with FlopCounterMode(display=False) as fc: loss_sum(m, _to_device(b, dev), .1).backward()
    fl, n = fl + fc.get_total_flops(), n + b.num_tgt_tokens
fpt = rep["train_flop_per_target_token"] = fl / n  # docs/benchmarks.md: ~48 MFLOP in the CPU runs
def row(p):  # window 1 (warm-up) dropped; CPU dev BLEU at step 300 (docs/benchmarks.md): 7.26 (fp32), 7.38 (bf16)
    recs = [json.loads(x) for x in open(W / p / "metrics.jsonl")]
    tps = statistics.median([r["tok_per_s"] for r in recs if "tok_per_s" in r][1:])
    return {"tok_per_s": tps, "mfu": round(tps * fpt / 989e12, 5), "bleu": [r["dev_bleu"] for r in recs if "dev_bleu" in r]}
for p in ("fp32", "bf16", "fp16"): probe("train_" + p, lambda p=p: row(p))
t = translator.Translator.from_checkpoint(W / "fp32"); t.model.to(dev); test = data.load_split(t.config.data, "test")
def beam5():  # on the GPU (the CLI never moves a model there); the run's decode config: beam_stop certain, batch 64
    t.translate(test.src[:64], beam_size=5); torch.cuda.synchronize(); s = time.perf_counter()
    h = t.translate_lines(test.src, beam_size=5); sec = time.perf_counter() - s
    return {"sentences": len(h), "sent_per_s": round(len(h) / sec, 1), "bleu": evaluate.score_corpus(h, test.tgt).bleu}
probe("beam5_test_on_gpu", beam5)  # the review expects the next to FAIL: a CPU torch.Generator (decoding/translator.py)
probe("sampling_on_gpu", lambda: t.translate(test.src[:4], sample=True, beam_size=1)[0].text)
EOF
# 4. time left: tests training on the GPU (device auto). Predicted FAILs: resume (CUDA RNG), *refused_up_front, torchrun
left=$((300 - SECONDS)); [ $left -gt 60 ] && timeout $left $PY -m pytest -q -p no:cacheprovider tests/test_distributed.py \
  tests/test_cli.py::test_resume_matches_uninterrupted_run >"$O/pytest.txt" 2>&1
log "pytest: $(tail -1 "$O/pytest.txt" 2>&1); done in ${SECONDS}s; results in $O (report.json, summary.txt, pytest.txt)"
