#!/usr/bin/env bash
# Prepare a run on a lent GPU machine (the workplace's `device` tool), which has PyTorch but no network.
#
# Run here, in the repository root:   bash benchmarks/device/prepare.sh
# It fills two git-ignored folders that the device call names in `carry`:
#   .data/fashion-mnist/  the dataset's idx files (Debian's dataset-fashion-mnist package)
#   .whl/                 wheels of the benchmark's anchors the device image lacks
#                         (torch-lr-finder; fastai and its fast.ai dependencies), for CPython 3.12
# Then, on the device:                 bash benchmarks/device/run.sh   (see that file)
set -euo pipefail
cd "$(dirname "$0")/../.."

src=/usr/share/datasets/fashion-mnist
if [ ! -d "$src" ]; then
    echo "prepare: $src is missing: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)" >&2
    exit 2
fi
mkdir -p .data/fashion-mnist
cp -u "$src"/*-ubyte* .data/fashion-mnist/

py=${DEVICE_PYTHON_VERSION:-3.12}  # the device image's python3 (KINDS.md); wheels with compiled code must match
rm -rf .whl && mkdir -p .whl
# fastprogress < 1.1: later releases pull in a web framework (python-fasthtml) the benchmark does not use.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl torch-lr-finder==0.2.2 fastai==2.8.12 'fastcore>=2.2.22' 'fasttransform>=0.0.3' \
    'fastprogress>=0.2.4,<1.1' fastdownload==0.0.8 'plum-dispatch<2.10' 'beartype>=0.16.2'
du -sh .data .whl
echo "prepare: done. On the device: carry [\".data\", \".whl\"], command: bash benchmarks/device/run.sh"
