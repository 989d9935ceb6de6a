#!/usr/bin/env bash
# Regenerate the README figures. Run from anywhere: bash docs/make_figures.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# QLoRA (the defaults: NF4 + double quant, LoRA r=16 on all linear layers, batch 1):
# which model fits which GPU, and the longest sequence that does.
vramplan plot fit-matrix --models 1b,3b,7b,8b,13b,70b --gpus t4,3060,3090,4090,l4,a100-40g,a100,h100 \
    --method qlora --batch 1 --seq 512 --out docs/fit_matrix.png

# Where the memory goes: QLoRA of Llama-2-13B on a T4 at 2048 tokens.
vramplan plot breakdown --model 13b --gpu t4 --method qlora --seq 2048 --out docs/breakdown.png
