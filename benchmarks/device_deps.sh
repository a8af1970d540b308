#!/bin/sh
# What vfer imports and the lent GPU machine of benchmarks/NOTES.md ("GPU") lacks: jsonschema
# (vfer.config validates every config with it). Unpacks pure-Python wheels for that machine's
# Python 3.12 into benchmarks/device-deps/ (ignored, as every benchmarks/*/). There:
#   run carry=["benchmarks/device-deps"]
#       command: PYTHONPATH=.:benchmarks/device-deps python -m benchmarks.bench_gpu
set -eu
cd "$(dirname "$0")"
rm -rf device-deps
mkdir -p device-deps/wheels
../.venv/bin/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 -d device-deps/wheels \
    jsonschema==4.17.3 pyrsistent==0.20.0 attrs==26.1.0
for wheel in device-deps/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" device-deps
done
rm -r device-deps/wheels
echo "unpacked into benchmarks/device-deps: $(ls device-deps | grep -v dist-info | tr '\n' ' ')"
