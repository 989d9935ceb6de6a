#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into validation/wheels/ (ignored by git; ~44 MB):
# pydantic and its parts (vramplan's specs need them; the image has none) and bitsandbytes
# (8-bit and paged optimizers). The GPU image runs CPython 3.12 on x86-64.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d wheels \
    pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.8.0 typing-inspection==0.4.2 \
    typing-extensions==4.16.0 bitsandbytes==0.50.2
ls -la wheels
