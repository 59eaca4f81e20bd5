#!/usr/bin/env bash
# Side-by-side CPU benchmark of seq2seq toolkits (Joey NMT, OpenNMT-py) on the
# es->en Bible corpus.  Usage:
#
#   ./run_peers.sh [STAGE ...]        STAGE: venvs data throughput train decode summary all
#                                     (default: data throughput summary)
#
# Every setting is an environment variable (defaults in brackets):
#   PEERS_VENVS   venv root with joey/ onmt/ tools/          [${TMPDIR:-/tmp}/peers]
#   PEERS_WORK    scratch: prepared data, runs, models, JSON  [$PEERS_VENVS/work]
#   BIBLE_DIR     canonical corpus {train,dev,test}.{es,en}[.gz]
#                 [<this dir>/../shared/data/bible-es-en]; if absent a temporary
#                 corpus is built from the Debian SWORD modules (common/make_temp_bible.py)
#   PEERS         toolkits to run                             [joey onmt]
#   MODELS        model configs to run                        [rnn transformer]
#   THREADS       torch intra-op threads                      [2]
#   BATCH_TOKENS  training batch size in tokens               [4096]
#   WARMUP_STEPS / MEASURE_STEPS  throughput window           [20 / 200]
#   BUDGET_MIN    wall-clock training budget per model (train stage) [20]
#   BUDGET_S      the same in seconds (overrides BUDGET_MIN)
#   BUDGET_STEPS  stop the train stage after this many updates instead (0 = wall clock only) [0]
#   TF_SCHEDULE   Transformer learning rate, both peers: noam (factor 1, warm-up 1000)
#                 or constant (Adam at 1e-3, heedful's bench-transformer) [noam]
#   DEC_BATCH     decoding batch size in sentences            [64]
#   MAX_OUT       max output length in pieces when decoding   [200]
#   TEST_SLICE    decode only the first N test sentences (0 = all) [0]
#   BEAMS         beam sizes to time                          [1 5]
#   DEV_BEAM      beam for the (untimed) dev-set BLEU decode; empty = skip [5]
#   ONMT_ENC_HID  OpenNMT-py brnn enc_hid_size (sum of both directions) [256]
#   JOEY_ENC_HID  Joey NMT bidirectional encoder hidden_size (per direction) [128]
#   QUIET_WAIT_S  before each measured run, wait up to this long for the CPUs to be
#                 free of other work (Linux PSI cpu avg10 < QUIET_PSI %) [900 / 5]
# Results: one JSON per measurement in $PEERS_WORK/results/, summary table from
# `./run_peers.sh summary` (common/summarize.py).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${PEERS_VENVS:-${TMPDIR:-/tmp}/peers}"
WORK="${PEERS_WORK:-$VENVS/work}"
BIBLE_DIR="${BIBLE_DIR:-$HERE/../../heedful/datasets/bible_es_en}"
PEERS="${PEERS:-joey onmt}"
MODELS="${MODELS:-rnn transformer}"
THREADS="${THREADS:-2}"
BATCH_TOKENS="${BATCH_TOKENS:-4096}"
WARMUP_STEPS="${WARMUP_STEPS:-20}"
MEASURE_STEPS="${MEASURE_STEPS:-200}"
BUDGET_MIN="${BUDGET_MIN:-20}"
DEC_BATCH="${DEC_BATCH:-64}"
MAX_OUT="${MAX_OUT:-200}"
TEST_SLICE="${TEST_SLICE:-0}"
BEAMS="${BEAMS:-1 5}"
DEV_BEAM="${DEV_BEAM-5}"
ONMT_ENC_HID="${ONMT_ENC_HID:-256}"
JOEY_ENC_HID="${JOEY_ENC_HID:-128}"
TF_SCHEDULE="${TF_SCHEDULE:-noam}"
case "$TF_SCHEDULE" in
  noam) TF_LR=1.0; TF_DECAY=noam; JOEY_TF_SCHED=noam ;;
  constant) TF_LR=0.001; TF_DECAY=none; JOEY_TF_SCHED=exponential ;;
  *) echo "TF_SCHEDULE must be noam or constant, not '$TF_SCHEDULE'" >&2; exit 2 ;;
esac
TIME_BIN="${TIME_BIN:-/usr/bin/time}"
QUIET_WAIT_S="${QUIET_WAIT_S:-900}"
QUIET_PSI="${QUIET_PSI:-5}"
RES="$WORK/results"
mkdir -p "$WORK" "$RES"
# keep every library to the same thread budget
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" TORCH_THREADS="$THREADS"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- data
corpus_dir() {  # prints the raw corpus dir in use (builds the temporary one if needed)
  if [ -e "$BIBLE_DIR/train.es" ] || [ -e "$BIBLE_DIR/train.es.gz" ]; then
    (cd "$BIBLE_DIR" && pwd)
  else
    local tmp="$WORK/data/bible-temp"
    if [ ! -s "$tmp/test.en" ]; then
      log "canonical corpus not found at $BIBLE_DIR; building temporary corpus with diatheke"
      "$VENVS/tools/bin/python" "$HERE/common/make_temp_bible.py" "$tmp" >&2
    fi
    echo "$tmp"
  fi
}

prep_dir() {  # prepared-data dir for the corpus in use
  local raw; raw="$(corpus_dir)"
  local tag; tag="$(basename "$raw")-$(cat "$raw"/{train,dev,test}.{es,en}* | sha256sum | cut -c1-10)"
  echo "$WORK/prep/$tag"
}

stage_data() {
  local raw out; raw="$(corpus_dir)"; out="$(prep_dir)"
  if [ ! -s "$out/stats.json" ]; then
    log "preparing $raw -> $out (joint sentencepiece BPE 8000)"
    "$VENVS/tools/bin/python" "$HERE/common/prepare_data.py" "$raw" "$out" --threads "$THREADS" >&2
  fi
  if [ "$TEST_SLICE" -gt 0 ]; then
    head -n "$TEST_SLICE" "$out/test.sp.es" > "$out/test$TEST_SLICE.sp.es"
    head -n "$TEST_SLICE" "$out/test.sp.en" > "$out/test$TEST_SLICE.sp.en"
    head -n "$TEST_SLICE" "$out/raw.test.en" > "$out/raw.test$TEST_SLICE.en"
  fi
  log "data: $out"
}

# ---------------------------------------------------------------- helpers
wait_quiet() {  # wait (up to QUIET_WAIT_S) until other processes leave the CPUs alone
  local waited=0 p
  while [ "$waited" -lt "$QUIET_WAIT_S" ]; do
    if [ -r /proc/pressure/cpu ]; then  # PSI: % of last 10 s some task waited for a CPU
      p="$(head -n1 /proc/pressure/cpu | sed 's/.*avg10=\([0-9.]*\).*/\1/')"
      awk -v p="$p" -v m="$QUIET_PSI" 'BEGIN{exit !(p < m)}' && return 0
    else
      awk -v l="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN{exit !(l < 0.5)}' && return 0
    fi
    [ "$waited" -eq 0 ] && log "machine busy (cpu pressure avg10=${p:-?}%), waiting up to ${QUIET_WAIT_S}s"
    sleep 10; waited=$((waited + 10))
  done
  log "WARNING: machine still busy after ${QUIET_WAIT_S}s; measuring anyway (see cpu_pressure_share)"
}

probe() {  # one line: epoch seconds, 1-min load average, CPU pressure total (us, Linux PSI)
  local psi=""; [ -r /proc/pressure/cpu ] && psi="$(head -n1 /proc/pressure/cpu | sed 's/.*total=//')"
  echo "$(date +%s.%N) $(cut -d' ' -f1 /proc/loadavg) ${psi:-NA}"
}

render() {  # template out key=value...
  local tpl="$1" out="$2"; shift 2
  local args=()
  for kv in "$@"; do args+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${args[@]}" "$tpl" > "$out"
  if grep -q '@[A-Z_]*@' "$out"; then echo "unfilled placeholder in $out" >&2; exit 1; fi
}

cfg_for() {  # peer model model_dir steps log_freq beam dev test load_model -> config path
  # dev/test/load_model are YAML values: "\"path\"" or null
  local peer="$1" model="$2" mdir="$3" steps="$4" lfreq="$5" beam="$6" dev="$7" test="$8" load="$9"
  local data; data="$(prep_dir)"
  local out; out="$(dirname "$mdir")/config.yaml"; [ -d "$mdir" ] && out="$mdir/config.yaml"
  render "$HERE/$peer/$model.yaml.in" "$out" \
    MODEL_DIR="$mdir" DATA="$data" DEV="$dev" TEST="$test" LOAD_MODEL="$load" BEAM="$beam" \
    DEC_BATCH="$DEC_BATCH" MAX_OUT="$MAX_OUT" BATCH="$BATCH_TOKENS" STEPS="$steps" \
    LOG_FREQ="$lfreq" VALID_FREQ=100000000 ENC_HID="$ONMT_ENC_HID" DEC_HID=256 \
    JOEY_ENC_HID="$JOEY_ENC_HID" \
    TF_LR="$TF_LR" TF_DECAY="$TF_DECAY" JOEY_TF_SCHED="$JOEY_TF_SCHED"
  echo "$out"
}

train_cmd() {  # peer config -> module + args for steptimer.py
  case "$1" in
    joey) echo "joeynmt train $2 --skip-test" ;;
    onmt) echo "onmt.bin.train -config $2" ;;
  esac
}

run_train() {  # peer model kind(tput|budget)
  local peer="$1" model="$2" kind="$3"
  local dir="$WORK/runs/$peer-$model-$kind"
  rm -rf "$dir"; mkdir -p "$dir"
  local steps budget_arg=()
  if [ "$kind" = tput ]; then
    steps=$((WARMUP_STEPS + MEASURE_STEPS))
  else
    steps=100000000; budget_arg=(--budget-s "${BUDGET_S:-$((BUDGET_MIN * 60))}")
    [ "${BUDGET_STEPS:-0}" -gt 0 ] && budget_arg=(--budget-steps "$BUDGET_STEPS")
  fi
  local cfg; cfg="$(cfg_for "$peer" "$model" "$dir/model" "$steps" 20 1 "\"$(prep_dir)/dev.sp\"" null null)"  || return 1
  [ "$peer" = onmt ] && mkdir -p "$dir/model"
  wait_quiet
  log "train $peer/$model ($kind): $dir"
  # shellcheck disable=SC2046
  "$TIME_BIN" -v -o "$dir/time.txt" \
    "$VENVS/$peer/bin/python" "$HERE/common/steptimer.py" --peer "$peer" --threads "$THREADS" \
      --warmup "$WARMUP_STEPS" --measure "$MEASURE_STEPS" --out "$dir/steps.json" "${budget_arg[@]}" \
      -- $(train_cmd "$peer" "$cfg") > "$dir/train.log" 2>&1 || {
        log "FAILED: $peer/$model ($kind), see $dir/train.log"; tail -n 20 "$dir/train.log" >&2; return 1; }
  "$VENVS/tools/bin/python" "$HERE/common/collect.py" train "$peer" "$model" "$kind" "$dir" \
    --batch-tokens "$BATCH_TOKENS" > "$RES/train-$peer-$model-$kind.json"
  cat "$RES/train-$peer-$model-$kind.json" >&2
}

stage_throughput() {
  stage_data
  for peer in $PEERS; do for model in $MODELS; do
    run_train "$peer" "$model" tput || true
  done; done
}

stage_train() {
  stage_data
  for peer in $PEERS; do for model in $MODELS; do
    run_train "$peer" "$model" budget || true
  done; done
}

# ---------------------------------------------------------------- decoding
ckpt_for() {  # peer model -> checkpoint (budget run if present, else throughput run)
  local peer="$1" model="$2" kind
  for kind in budget tput; do
    local m="$WORK/runs/$peer-$model-$kind/model"
    case "$peer" in
      joey) [ -e "$m/latest.ckpt" ] && { echo "$kind $(readlink -f "$m/latest.ckpt")"; return; } ;;
      onmt) local c; c="$(ls -t "$m"/model_step_*.pt 2>/dev/null | head -n1 || true)"
            [ -n "$c" ] && { echo "$kind $c"; return; } ;;
    esac
  done
  return 1
}

run_decode() {  # peer model set(test|dev) beam
  local peer="$1" model="$2" set="$3" beam="$4"
  local data; data="$(prep_dir)"
  local name="$set"; [ "$set" = test ] && [ "$TEST_SLICE" -gt 0 ] && name="test$TEST_SLICE"
  local ck; ck="$(ckpt_for "$peer" "$model")" || { log "no checkpoint for $peer/$model"; return 1; }
  local from="${ck%% *}" ckpt="${ck#* }"
  local dir="$WORK/runs/$peer-$model-decode-$name-beam$beam"
  rm -rf "$dir"; mkdir -p "$dir"
  local hyp="$dir/hyp.sp.en" cmd
  case "$peer" in
    joey)
      local cfg; cfg="$(cfg_for joey "$model" "$dir" 1 1 "$beam" null "\"$data/$name.sp\"" "\"$ckpt\"")" || return 1
      cmd="joeynmt test $cfg --output-path $dir/out" ;;
    onmt)
      cmd="onmt.bin.translate -model $ckpt -src $data/$name.sp.es -output $hyp -gpu -1
           -beam_size $beam -batch_size $DEC_BATCH -batch_type sents -max_length $MAX_OUT
           -length_penalty wu -alpha 1.0 -n_best 1 -report_time -seed 1234" ;;
  esac
  wait_quiet
  log "decode $peer/$model $name beam=$beam (model from $from run)"
  probe > "$dir/load.txt"
  # OpenNMT-py 3.5.1 checkpoints pickle argparse.Namespace etc.; torch>=2.6 defaults to
  # torch.load(weights_only=True) and refuses them -> allow full unpickling (own files only)
  # shellcheck disable=SC2086
  TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$TIME_BIN" -v -o "$dir/time.txt" \
    "$VENVS/$peer/bin/python" "$HERE/common/steptimer.py" --peer none --threads "$THREADS" \
      --out "$dir/steps.json" -- $cmd > "$dir/decode.log" 2>&1 || {
        log "FAILED: decode $peer/$model, see $dir/decode.log"; tail -n 20 "$dir/decode.log" >&2; return 1; }
  probe >> "$dir/load.txt"
  [ "$peer" = joey ] && cp "$dir/out.test" "$hyp"
  "$VENVS/tools/bin/python" "$HERE/common/collect.py" decode "$peer" "$model" "$name" "$dir" \
    --beam "$beam" --spm "$data/spm.model" --ref "$data/raw.$name.en" --ckpt-from "$from" \
    --dec-batch "$DEC_BATCH" > "$RES/decode-$peer-$model-$name-beam$beam.json"
  cat "$RES/decode-$peer-$model-$name-beam$beam.json" >&2
}

stage_decode() {  # all greedy runs first, then beam 5, then the dev-set BLEU runs
  stage_data
  for beam in $BEAMS; do for peer in $PEERS; do for model in $MODELS; do
    run_decode "$peer" "$model" test "$beam" || true
  done; done; done
  if [ -n "$DEV_BEAM" ]; then for peer in $PEERS; do for model in $MODELS; do
    run_decode "$peer" "$model" dev "$DEV_BEAM" || true
  done; done; fi
}

stage_summary() {
  "$VENVS/tools/bin/python" "$HERE/common/summarize.py" "$RES" "$(prep_dir)/stats.json"
}

main() {
  local stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=(data throughput summary)
  for s in "${stages[@]}"; do
    case "$s" in
      venvs) PEERS_VENVS="$VENVS" "$HERE/setup_venvs.sh" ;;
      data) stage_data ;;
      throughput) stage_throughput ;;
      train) stage_train ;;
      decode) stage_decode ;;
      summary) stage_summary ;;
      all) PEERS_VENVS="$VENVS" "$HERE/setup_venvs.sh"; stage_throughput; stage_train; stage_decode; stage_summary ;;
      *) echo "unknown stage $s" >&2; exit 2 ;;
    esac
  done
}

# one line, parsed before it runs: editing this file while it runs cannot
# make bash execute the edited text
main "$@"; exit $?
