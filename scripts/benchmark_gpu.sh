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
#   7. CE and EAC on the synthetic grid (3 seeds) in bfloat16 and in float32: the same accuracy
#      within the seed spread (tables under $OUT/grid_*).
# Results go to $OUT (default runs/benchmark_gpu): one log per step, rows appended to
# $OUT/rows.md (and to docs/benchmarks.md with --write).
#
#   bash scripts/benchmark_gpu.sh [--write]   # STEPS=50 BUDGET=420 OFFICIAL=.official
#                                             # PYTHON=python COMMIT=<git HEAD> OUT=...
# On a machine that reaches no package index, carry the wheels of scripts/gpu_wheels.sh and
# install them first (that script says how).
set -u
steps=${STEPS:-50}
budget=${BUDGET:-420}
official=${OFFICIAL:-.official}
write=${1:-}
python=${PYTHON:-python}
out=${OUT:-runs/benchmark_gpu}
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}
raf=$out/raf_db
cache=$out/cache
mkdir -p "$out"
status=0
start=$SECONDS
left() { [ $((SECONDS - start)) -lt "$budget" ] || { echo "== budget spent, skipping: $*"; return 1; }; }
bench() {  # bench NAME ARGS...: one scripts/benchmark.py row
  local name=$1; shift
  left "$name" || return 0
  echo "== $name"
  "$python" scripts/benchmark.py --steps "$steps" --commit "$commit" $write \
    --config.dataset.cache_dir="$cache" "$@" > "$out/$name.log" 2>&1 || status=1
  grep '^| 20' "$out/$name.log" | tee -a "$out/rows.md"
}
raf_config() { echo "configs/$1.py:raf_db"; }

echo "== RAF-DB-sized synthetic copy"
[ -d "$raf" ] || "$python" -m fer_jax.data.synthetic --raf_db_dir "$raf" || status=1
data=(--config.dataset.data_dir="$raf")

bench eac_b64 --config "$(raf_config eac)" "${data[@]}" --config.batch_size=64 \
  --profile "$out/trace_eac_b64"
bench eac_b32 --config "$(raf_config eac)" "${data[@]}" --config.batch_size=32

if left "60-epoch EAC run"; then
  echo "== 60-epoch EAC run"
  rm -rf "$out/eac_60"
  began=$SECONDS  # the copy was prepared by the rows above: this times decode, compile, train
  "$python" -m fer_jax.main --config "$(raf_config eac)" "${data[@]}" \
    --config.dataset.cache_dir="$cache" --config.progress_bar=false --workdir "$out/eac_60" \
    > "$out/eac_60.log" 2>&1 || status=1
  echo "60-epoch EAC run: $((SECONDS - began)) s wall" | tee -a "$out/rows.md"
  grep -E "final accuracy|Input:" "$out/eac_60.log" | tee -a "$out/rows.md"
fi

for method in baseline ncct scn rul; do
  bench "${method}_b64" --config "$(raf_config $method)" "${data[@]}" --config.batch_size=64 \
    --placements device
done
bench lanet_b64 --config configs/lanet.py:synthetic,recipe=paper --config.batch_size=64 \
  --placements device
for method in baseline eac; do
  bench "${method}_b64_f32" --config "$(raf_config $method)" "${data[@]}" \
    --config.batch_size=64 --config.dtype=float32 --placements device
done

if [ -d "$official" ] && left "official PyTorch"; then
  for spec in ce,eac_r18,ncct:64 ce_caffe50,eac:32; do
    echo "== official PyTorch ${spec%%:*}"
    "$python" scripts/benchmark_torch.py --official_dir "$official" --methods "${spec%%:*}" \
      --batch_size "${spec##*:}" --image_size 224 --steps "$steps" --commit "$commit" $write \
      2>&1 | grep '^| 20' | tee -a "$out/rows.md" || status=1
  done
  "$python" scripts/benchmark_torch.py --official_dir "$official" --methods eac_r18 \
    --batch_size 32 --image_size 224 --steps "$steps" --commit "$commit" $write \
    --end_to_end --raf_path "$raf" 2>&1 | grep '^| 20' | tee -a "$out/rows.md" || status=1
fi
for dtype in bfloat16 float32; do
  if left "synthetic grid $dtype"; then
    echo "== synthetic grid, CE and EAC, $dtype"
    "$python" -m fer_jax.grid --grid "configs/grids/synthetic.py:methods=baseline+eac,dtype=$dtype" \
      --root "$out/grid_$dtype" --jobs 6 > "$out/grid_$dtype.log" 2>&1 || status=1
    tail -12 "$out/grid_$dtype.log" | tee -a "$out/rows.md"
  fi
done
echo "== done in $((SECONDS - start)) s"
exit $status
