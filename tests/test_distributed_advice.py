"""Multi-GPU advice: the single-GPU step's flags reproduce a fitting per-rank plan, `fit --gpus` says the
fewest GPUs, the cheapest strategy and run changes whose flags do what they say, or the room per rank."""
from __future__ import annotations

import re
import shlex

import pytest

from vramplan.cli.main import main
from vramplan.distributed.advice import (layout_flags, rank_advice, rank_run_changes, rank_spare_room,
                                         render_rank_advice, render_shard_step, shard_step)
from vramplan.distributed.solve import max_per_rank, world_layouts
from vramplan.estimate import make_parallel, make_run, plan, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model

BIG = ["--model", "llama-3.1-70b", "--gpu", "a100-40g"]


@pytest.fixture(scope="module")
def big():
    return resolve_model("llama-3.1-70b"), get_gpu("a100-40g")


def _flags_in(line: str) -> list[str]:
    return shlex.split(re.search(r"\[([^\]]*)\]\s*$", line).group(1))


def test_layout_flags_name_only_what_changes():
    assert layout_flags(make_parallel(gpus=4, strategy="fsdp")) == "--gpus 4 --strategy fsdp"
    assert layout_flags(make_parallel(gpus=8, nodes=2, strategy="zero3", offload="optimizer"),
                        make_parallel(gpus=8, strategy="zero3")) == "--nodes 2 --offload optimizer"
    assert layout_flags(make_parallel(gpus=4), make_parallel(gpus=2)) == "--gpus 4"


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_shard_step_flags_reproduce_a_fitting_plan_on_the_fewest_gpus(big, capsys, method):
    model, gpu = big
    run = make_run(method=method)
    step = shard_step(model, gpu, run)
    assert step is not None and step.layout is not None and step.layout.fits
    code = main(["fit", *BIG, "--method", method, *shlex.split(step.flags), "--host-ram", "unknown"])
    out = capsys.readouterr().out
    assert code == 0 and "FITS on every rank" in out
    layout = step.layout.parallel
    fewer = [p for p in world_layouts(layout, max_world=layout.world_size - 1) if p.world_size >= 2]
    assert not any(plan_ranks(model, gpu, run, parallel=p).fits for p in fewer)


def test_shard_step_past_one_node_of_fsdp_offers_zero3_with_the_optimizer_offloaded(big):
    model, gpu = big
    run = make_run(method="full")
    fsdp_on_8 = plan_ranks(model, gpu, run, parallel=make_parallel(gpus=8, strategy="fsdp"))
    assert not fsdp_on_8.fits
    step = shard_step(model, gpu, run)
    assert step.layout.parallel.resolved_strategy == "zero3" and step.layout.parallel.offload == "optimizer"
    assert "--strategy zero3 --offload optimizer" in step.flags and "more than 8" in step.change
    text = render_shard_step(step)
    assert text.startswith("on more GPUs:") and step.flags in text and "host RAM needed per node" in text


def test_inference_is_split_with_the_smallest_tensor_parallel_degree_that_fits(big, capsys):
    model, gpu = big
    run = make_run(method="inference")
    step = shard_step(model, gpu, run)
    degree = step.layout.parallel.tensor_parallel
    assert step.flags == f"--gpus {degree} --tensor-parallel {degree}" and step.layout.fits
    assert not any(plan_ranks(model, gpu, run, parallel=make_parallel(gpus=t, tensor_parallel=t)).fits
                   for t in range(2, degree) if model.num_attention_heads % t == 0)
    assert main(["fit", *BIG, "--method", "inference", *shlex.split(step.flags), "--host-ram", "unknown"]) == 0
    capsys.readouterr()
    assert main(["fit", *BIG, "--method", "inference", "--gpus", "2", "--host-ram", "unknown"]) == 1
    out = capsys.readouterr().out
    assert f"tensor parallelism over {degree} GPUs" in out and f"[--gpus {degree} --tensor-parallel {degree}]" in out
    assert "cheapest strategy" not in out


def test_shard_step_says_when_nothing_fits(big):
    model, gpu = big
    assert render_shard_step(None) == ""
    tiny = get_gpu("1GiB")
    step = shard_step(model, tiny, make_run(method="full", seq_len=8192))
    assert step.layout is None and step.flags == "" and "up to 64" in render_shard_step(step)


def test_single_gpu_fit_prints_the_sharding_step_after_the_advice_list(capsys):
    code = main(["fit", *BIG, "--method", "lora"])
    out = capsys.readouterr().out
    assert code == 1
    advice, shard = out.index("to make it fit:"), out.index("on more GPUs:")
    assert advice < shard
    assert "[--gpus 5 --strategy fsdp]" in out[shard:]


def test_single_gpu_fit_that_fits_prints_no_sharding_step(capsys):
    assert main(["fit", "--model", "llama-3.1-8b", "--gpu", "a100-80g"]) == 0
    assert "on more GPUs" not in capsys.readouterr().out


def test_multi_gpu_fit_that_does_not_fit_prints_fewest_cheapest_and_changes_that_do_what_they_say(capsys):
    base = [*BIG, "--gpus", "4", "--strategy", "fsdp", "--method", "lora", "--host-ram", "2TiB"]
    assert main(["fit", *base]) == 1
    out = capsys.readouterr().out
    lines = out[out.index("to make it fit:"):].splitlines()
    fewest = next(line for line in lines if "fewest GPUs for fsdp" in line)
    cheapest = next(line for line in lines if "cheapest strategy that fits" in line)
    changes = [line for line in lines[lines.index(next(l for l in lines if l.startswith("run changes"))) + 1:]
               if line.startswith("  - ")]
    assert _flags_in(fewest) == ["--gpus", "5"] and changes
    for line in [fewest, cheapest, *changes]:
        code = main(["fit", *base, *_flags_in(line)])  # argparse keeps the last of a repeated flag
        capsys.readouterr()
        expected = 1 if "still does not fit" in line else 0
        assert code == expected, line


def test_rank_run_changes_are_replanned_and_fitting_ones_come_first(big):
    model, gpu = big
    run = make_run(method="lora", micro_batch_size=8, seq_len=2048)
    parallel = make_parallel(gpus=8, strategy="fsdp")
    cluster = plan_ranks(model, gpu, run, parallel=parallel)
    assert not cluster.fits
    changes = rank_run_changes(model, gpu, run, parallel, cluster)
    assert changes and changes[0].fits
    fits = [item.fits for item in changes]
    assert fits == sorted(fits, reverse=True)
    for item in changes:
        again = plan_ranks(model, gpu, item.run, parallel=parallel)
        assert again == item.cluster
        assert item.saved_bytes == (cluster.worst_rank.breakdown.peak_allocated_bytes
                                    - again.worst_rank.breakdown.peak_allocated_bytes)
    batch = next(item for item in changes if item.kinds == ("batch",))
    assert batch.run.micro_batch_size * batch.run.grad_accum_steps == 8


def test_combination_is_offered_when_no_single_change_fits(big):
    model, gpu = big
    run = make_run(method="qlora", micro_batch_size=8, seq_len=8192, gradient_checkpointing=False)
    parallel = make_parallel(gpus=2, strategy="fsdp")
    cluster = plan_ranks(model, gpu, run, parallel=parallel)
    changes = rank_run_changes(model, gpu, run, parallel, cluster)
    singles = [item for item in changes if len(item.kinds) == 1]
    combined = [item for item in changes if len(item.kinds) > 1]
    assert not any(item.fits for item in singles)
    assert combined and combined[0].fits and combined[0] is changes[0]


def test_multi_gpu_fit_that_fits_prints_the_room_per_rank(big, capsys):
    model, gpu = big
    run = make_run(method="lora")
    parallel = make_parallel(gpus=8, strategy="fsdp")
    assert main(["fit", *BIG, "--gpus", "8", "--strategy", "fsdp", "--method", "lora", "--host-ram", "2TiB"]) == 0
    out = capsys.readouterr().out
    batch = max_per_rank("batch", model, gpu, run, parallel, limit=4096)
    assert "room to spare (per rank):" in out and f"micro-batch up to {batch} per rank fits" in out
    spare = rank_spare_room(model, gpu, run, parallel, plan_ranks(model, gpu, run, parallel=parallel))
    assert spare and all(item.fits for item in spare)


def test_host_that_does_not_fit_is_said_and_run_changes_are_skipped(big):
    model, gpu = big
    run = make_run(method="qlora")
    parallel = make_parallel(gpus=8, strategy="fsdp")
    cluster = plan_ranks(model, gpu, run, parallel=parallel, host_ram_bytes=2**30)
    assert all(role.breakdown.fits for role in cluster.ranks) and not cluster.fits
    advice = rank_advice(model, gpu, run, parallel, cluster, host_ram_bytes=2**30)
    assert advice.changes == [] and advice.fewest is None and advice.cheapest is None
    assert advice.cheapest_gpus_only is not None and advice.host_short == cluster.host
    text = render_rank_advice(advice, parallel)
    assert "every rank fits; the host RAM of one node does not" in text and "run changes" not in text


def test_single_gpu_advice_list_is_unchanged_by_the_sharding_step(big):
    from vramplan.advice import advise, render_advice, render_fit_advice

    model, gpu = big
    run = make_run(method="lora")
    listed = render_advice(advise(model, gpu, run), plan(model, gpu, run).fits)
    assert render_fit_advice(model, gpu, run, False).startswith(listed + "\non more GPUs:")
