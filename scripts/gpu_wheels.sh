#!/usr/bin/env bash
# Wheels (Python 3.12, x86-64) of what fer_jax needs and a lent GPU machine's image lacks, into
# .whl/ (ignored by git): that machine reaches no package index. There, before benchmark_gpu.sh:
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
# The image already holds jax (CUDA), flax, optax, orbax-checkpoint, etils, numpy, protobuf,
# pyarrow, pillow, matplotlib, tqdm and the other common packages.
#
#   bash scripts/gpu_wheels.sh        # then name .whl in the run's carry
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 manylinux_2_24_x86_64 manylinux_2_31_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  grain==0.2.18 array_record==0.8.6 tensorflow-datasets==4.9.10 dm-tree==0.1.10 \
  immutabledict==4.3.1 simple_parsing==0.1.9 docstring_parser==0.18.0 \
  tensorflow-metadata==1.21.0 googleapis-common-protos==1.76.0 termcolor==3.3.0 toml==0.10.2 \
  ml_collections==1.1.0 clu==0.0.12 tensorboardX==2.6.5 importlib_resources==7.1.0
# Pure-Python packages published as source only: built into wheels here.
python3 -m pip wheel -q --no-deps -w .whl promise==2.3
du -sh .whl
