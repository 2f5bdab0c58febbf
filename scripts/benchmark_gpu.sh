#!/usr/bin/env bash
# Every benchmark row of docs/benchmarks.md for one accelerator, in one go: each method with its
# paper recipe (224 px, full-width ResNet-18) on the synthetic faces at one common batch (64),
# so that the ratios to CE compare, and the default input workers; CE and EAC again in
# bfloat16, on EAC's Caffe-style ResNet-50 (its batch, 32), and CE fed by in-process threads
# instead of worker processes; then the official PyTorch training steps, side by side, when a
# fetched copy of the official code is in $OFFICIAL (never committed; scripts/benchmark_torch.py
# says how to lay it out).
#
#   bash scripts/benchmark_gpu.sh [--write]   # STEPS=50 OFFICIAL=.official PYTHON=python
#                                             # COMMIT=<git HEAD> by default
set -u
steps=${STEPS:-50}
official=${OFFICIAL:-.official}
write=${1:-}
python=${PYTHON:-python}
# A copy of the tree sent to another machine may carry stale git metadata: COMMIT names HEAD.
commit=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}
status=0
run() {
  echo "== $*"
  "$python" scripts/benchmark.py --steps "$steps" --commit "$commit" $write "$@" || status=1
}
paper() { echo "configs/$1.py:synthetic,recipe=paper"; }
for method in baseline eac ncct lanet scn rul; do
  run --config "$(paper $method)" --config.batch_size=64
done
for method in baseline eac; do
  run --config "$(paper $method)" --config.batch_size=64 --config.dtype=bfloat16
done
run --config "$(paper baseline)" --config.model.arch=resnet50_caffe
run --config "$(paper eac),arch=resnet50_caffe"
run --config "$(paper baseline)" --config.batch_size=64 --config.input.num_workers=0
if [ -d "$official" ]; then
  for spec in ce,eac_r18,ncct:64 ce_caffe50,eac:32; do
    echo "== official PyTorch ${spec%%:*}"
    "$python" scripts/benchmark_torch.py --official_dir "$official" --methods "${spec%%:*}" \
      --batch_size "${spec##*:}" --image_size 224 --steps "$steps" --commit "$commit" $write \
      || status=1
  done
fi
exit $status
