#!/usr/bin/env bash
# Every benchmark row of docs/benchmarks.md for one accelerator, in one go: each method at its
# paper recipe (224 px, full-width ResNet-18, the method's own batch) on the synthetic faces,
# CE and EAC again in bfloat16 and on EAC's Caffe-style ResNet-50, the input pipeline with
# worker processes, then the official PyTorch training steps side by side when a fetched copy
# of the official code is in $OFFICIAL (never committed; scripts/benchmark_torch.py says how to
# lay it out).
#
#   bash scripts/benchmark_gpu.sh [--write]   # STEPS=50 OFFICIAL=.official PYTHON=python by default
set -u
steps=${STEPS:-50}
official=${OFFICIAL:-.official}
write=${1:-}
python=${PYTHON:-python}
status=0
run() {
  echo "== $*"
  "$python" scripts/benchmark.py --steps "$steps" $write "$@" || status=1
}
for method in baseline eac ncct lanet scn rul; do
  run --config "configs/$method.py:synthetic,recipe=paper"
done
for method in baseline eac; do
  run --config "configs/$method.py:synthetic,recipe=paper" --config.dtype=bfloat16
done
run --config "configs/baseline.py:synthetic,recipe=paper" --config.model.arch=resnet50_caffe
run --config "configs/eac.py:synthetic,recipe=paper,arch=resnet50_caffe"
run --config "configs/baseline.py:synthetic,recipe=paper" --config.input.num_workers=8
run --config "configs/ncct.py:synthetic,recipe=paper" --config.input.num_workers=12
if [ -d "$official" ]; then
  for spec in ce,eac_r18,ce_caffe50,eac:32 ncct:128; do
    echo "== official PyTorch ${spec%%:*}"
    "$python" scripts/benchmark_torch.py --official_dir "$official" --methods "${spec%%:*}" \
      --batch_size "${spec##*:}" --image_size 224 --steps "$steps" $write || status=1
  done
fi
exit $status
