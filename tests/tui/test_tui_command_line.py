"""`command_line()` builds the `vramplan fit ...` line the explorer copies: it must plan the same run."""
from __future__ import annotations

import shlex

import pytest

from vramplan.cli.main import build_parser
from vramplan.cli.run_flags import run_config_from_args
from vramplan.estimate import make_run
from vramplan.present import command_line

RUNS = [
    {},
    {"method": "lora", "micro_batch_size": 4, "seq_len": 2048, "gradient_checkpointing": False},
    {"double_quant": False, "lora_targets": "q_proj,v_proj", "lora_alpha": 8.5, "optimizer": "paged_adamw_8bit"},
    {"method": "full", "full_precision": "pure", "compute_dtype": "fp32", "fragmentation": 0.125},
    {"method": "inference", "weight_format": "gguf-q4_k_m", "max_new_tokens": 0, "kv_cache_dtype": "fp8"},
]


@pytest.mark.parametrize("fields", RUNS)
def test_command_line_parses_back_to_the_same_run(fields):
    run = make_run(**fields)
    line = command_line("./my models/config.json", "24GiB", run)
    args = build_parser().parse_args(shlex.split(line)[1:])
    assert (args.command, args.model, args.gpu) == ("fit", "./my models/config.json", "24GiB")
    assert run_config_from_args(args) == run


def test_command_line_names_only_the_knobs_off_their_default():
    assert command_line("13b", "t4", make_run()) == "vramplan fit --model 13b --gpu t4"
    assert command_line("13b", "t4", make_run(micro_batch_size=4, gradient_checkpointing=False)) == \
        "vramplan fit --model 13b --gpu t4 --batch 4 --no-gradient-checkpointing"
