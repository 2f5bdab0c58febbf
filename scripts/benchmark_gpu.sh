#!/usr/bin/env bash
# Every accelerator figure of docs/benchmarks.md in one go, most important first, each step
# skipped once BUDGET seconds have passed (so a short GPU window still gets the top rows):
#   1. a RAF-DB-sized copy of synthetic faces in RAF-DB's layout (12,271 / 3,068 100x100 JPEGs,
#      fer_jax.data.synthetic), prepared once;
#   2. EAC (paper recipe, 224 px, default dtype: bfloat16 on a GPU) at batch 64 and at its paper
#      batch 32: step only, device path and host path (scripts/benchmark.py), with a profiler
#      trace of the device-path steps;
#   3. the 60-epoch EAC run on that copy, evaluation every epoch, wall time with compilation;
#   4. every other method at batch 64 (LA-Net on the synthetic faces, which carry landmarks);
#   5. CE and EAC in float32;
#   6. the official PyTorch step and end to end (scripts/benchmark_torch.py), when a fetched
#      copy of the official code is in $OFFICIAL (never committed);
#   7. CE, EAC, NCCTFER and SCN on the synthetic grid (3 seeds) in bfloat16 and in float32: the
#      same accuracy within the seed spread (tables under $OUT/grid_*). NCCTFER's masks and
#      thresholds and SCN's relabels are the decisions that ties in bfloat16 would change.
# Results go to $OUT (default runs/benchmark_gpu): one log per step, rows appended to
# $OUT/rows.md (and to docs/benchmarks.md with --write).
#
#   bash scripts/benchmark_gpu.sh [--write]   # STEPS=50 BUDGET=420 OFFICIAL=.official
#                                             # PYTHON=python COMMIT=<git HEAD> OUT=...
#
# SMOKE=1 runs every step above at the configs' smoke-test size (runlocal: 32 px, width 8), one
# timed step, an 80-image copy, one epoch instead of 60, batches of 8 and 4 (2 for the official
# code, at the 224 px their code needs), the grid at one seed and one epoch, and fails (exit 1)
# when any step fails: tests/test_benchmark_gpu.py runs it on the CPU so that a GPU window is
# never lost to a script error. Its figures mean nothing.
# On a machine that reaches no package index, carry the wheels of scripts/gpu_wheels.sh and
# install them first (that script says how).
set -u
smoke=${SMOKE:-}
steps=${STEPS:-50}
budget=${BUDGET:-420}
official=${OFFICIAL:-.official}
write=${1:-}
python=${PYTHON:-python}
out=${OUT:-runs/benchmark_gpu}
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}
raf=$out/raf_db
cache=$out/cache
local_arg="" copy=() batch=64 small_batch=32 torch_batch="" epochs=() lanet_arg=recipe=paper
grid_arg="" jobs=6
if [ -n "$smoke" ]; then
  steps=1 budget=100000 local_arg=,runlocal=true copy=(--num_train 64 --num_test 16 --size 32)
  batch=8 small_batch=4 torch_batch=2 epochs=(--config.num_epochs=1) lanet_arg=runlocal=true
  grid_arg=,seeds=1,epochs=1,runlocal=true jobs=2
fi
mkdir -p "$out"
status=0
start=$SECONDS
left() { [ $((SECONDS - start)) -lt "$budget" ] || { echo "== budget spent, skipping: $*"; return 1; }; }
bench() {  # bench NAME ARGS...: one scripts/benchmark.py row
  local name=$1; shift
  left "$name" || return 0
  echo "== $name"
  # --config.* overrides after --config (absl refuses them before it)
  "$python" scripts/benchmark.py --steps "$steps" --commit "$commit" $write "$@" \
    --config.dataset.cache_dir="$cache" > "$out/$name.log" 2>&1 || status=1
  grep '^| 20' "$out/$name.log" | tee -a "$out/rows.md"
}
raf_config() { echo "configs/$1.py:raf_db$local_arg"; }

echo "== RAF-DB-sized synthetic copy"
[ -d "$raf" ] || "$python" -m fer_jax.data.synthetic --raf_db_dir "$raf" "${copy[@]}" || status=1
data=(--config.dataset.data_dir="$raf")

bench eac_b64 --config "$(raf_config eac)" "${data[@]}" --config.batch_size=$batch \
  --profile "$out/trace_eac_b64"
bench eac_b32 --config "$(raf_config eac)" "${data[@]}" --config.batch_size=$small_batch

if left "60-epoch EAC run"; then
  echo "== 60-epoch EAC run"
  rm -rf "$out/eac_60"
  began=$SECONDS  # the copy was prepared by the rows above: this times decode, compile, train
  "$python" -m fer_jax.main --config "$(raf_config eac)" "${data[@]}" \
    --config.dataset.cache_dir="$cache" --config.progress_bar=false --workdir "$out/eac_60" \
    "${epochs[@]}" > "$out/eac_60.log" 2>&1 || status=1
  echo "60-epoch EAC run: $((SECONDS - began)) s wall" | tee -a "$out/rows.md"
  grep -E "final accuracy|Input:" "$out/eac_60.log" | tee -a "$out/rows.md"
fi

for method in baseline ncct scn rul; do
  bench "${method}_b64" --config "$(raf_config $method)" "${data[@]}" \
    --config.batch_size=$batch --placements device
done
bench lanet_b64 --config "configs/lanet.py:synthetic,$lanet_arg" --config.batch_size=$batch \
  --placements device
for method in baseline eac; do
  bench "${method}_b64_f32" --config "$(raf_config $method)" "${data[@]}" \
    --config.batch_size=$batch --config.dtype=float32 --placements device
done

if [ -d "$official" ] && left "official PyTorch"; then
  official_row() {  # official_row NAME ARGS...: rows of scripts/benchmark_torch.py
    local name=$1; shift
    echo "== official PyTorch $name"
    "$python" scripts/benchmark_torch.py --official_dir "$official" --image_size 224 \
      --steps "$steps" --commit "$commit" $write "$@" > "$out/official_$name.log" 2>&1 || status=1
    grep '^| 20' "$out/official_$name.log" | tee -a "$out/rows.md"
  }
  official_row ce_eac_r18_ncct --methods ce,eac_r18,ncct --batch_size "${torch_batch:-64}"
  official_row ce_caffe50_eac --methods ce_caffe50,eac --batch_size "${torch_batch:-32}"
  official_row eac_r18_end_to_end --methods eac_r18 --batch_size "${torch_batch:-32}" \
    --end_to_end --raf_path "$raf"
fi
for dtype in bfloat16 float32; do
  if left "synthetic grid $dtype"; then
    echo "== synthetic grid, CE, EAC, NCCTFER and SCN, $dtype"
    "$python" -m fer_jax.grid \
      --grid "configs/grids/synthetic.py:methods=baseline+eac+ncct+scn,dtype=$dtype$grid_arg" \
      --root "$out/grid_$dtype" --jobs $jobs > "$out/grid_$dtype.log" 2>&1 || status=1
    echo "synthetic grid, $dtype:" | tee -a "$out/rows.md"
    grep -s '^| ' "$out/grid_$dtype/results.md" | tee -a "$out/rows.md"
  fi
done
echo "== done in $((SECONDS - start)) s"
exit $status
