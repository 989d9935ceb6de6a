"""--recipe fills a framework's knobs (sourced), the user's flags win, and the plan names what it does not model;
--kbit-prep norms keeps only the norms in fp32."""
import subprocess
import sys
import json

import pytest

from vramplan.estimate import estimate, make_run
from vramplan.memory.parameters import embedding_groups, norm_groups
from vramplan.resolve import resolve_model
from vramplan.stack.recipes import RECIPES, get_recipe
from vramplan.specs.run import RunConfig

MODEL = "llama-3.1-8b"
H, V, LAYERS = 4096, 128256, 32


def test_every_recipe_is_a_runconfig_choice_with_sources():
    assert set(RECIPES) == set(RunConfig.model_fields["recipe"].annotation.__args__[0].__args__)
    for name in RECIPES:
        recipe = get_recipe(name)
        assert recipe.sources and set(recipe.knobs) <= set(RunConfig.model_fields)


def test_llama_factory_skips_kbit_preparation_and_uses_reentrant_checkpointing():
    run = make_run(recipe="llama-factory")
    assert run.kbit_prep is False and run.checkpointing_variant == "reentrant"
    assert run.lora_rank == 8 and run.lora_dropout == 0.0
    factory = estimate(MODEL, "a10g", seq_len=2048, recipe="llama-factory")
    trainer = estimate(MODEL, "a10g", seq_len=2048, recipe="hf-trainer", lora_rank=8, lora_dropout=0.0)
    # embeddings, lm_head and norms stay bf16: half of prepare_model_for_kbit_training's fp32
    assert trainer.float_weights > 1.9 * factory.float_weights
    assert factory.stack["checkpointing"] == "reentrant" and factory.stack["recipe"] == "llama-factory"


def test_user_flags_win_over_the_recipe():
    run = make_run(recipe="unsloth", lora_rank=64, loss_impl="standard")
    assert run.lora_rank == 64 and run.loss_impl == "standard" and run.lora_dropout == 0.0


def test_hf_trainer_takes_the_trainer_default_optimizer_of_the_stack():
    assert make_run(recipe="hf-trainer").optimizer == "adamw_fused"  # torch 2.13
    assert make_run(recipe="hf-trainer", stack="torch=2.7").optimizer == "adamw"


def test_torchtune_trains_bf16_adapters_with_a_chunked_loss():
    tune = estimate(MODEL, "a10g", seq_len=2048, recipe="torchtune")
    assert tune.run.lora_dtype == "bf16" and tune.run.loss_impl == "chunked" and tune.run.optimizer == "adamw_fused"
    same_targets = estimate(MODEL, "a10g", seq_len=2048, lora_rank=8, lora_alpha=16, lora_dropout=0.0,
                            lora_targets=tune.run.lora_targets, kbit_prep=False, optimizer="adamw_fused",
                            loss_impl="chunked")
    assert same_targets.lora_adapters == 2 * tune.lora_adapters  # fp32 vs bf16, 512 B-rounded either way
    assert any("torchao's NF4Tensor" in note for note in tune.notes)


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_says_what_the_plan_does_not_model(name):
    plan = estimate(MODEL, "a10g", seq_len=2048, recipe=name)
    for text in get_recipe(name).not_modelled:
        assert f"{name}: {text}" in plan.notes


def test_unsloth_notes_its_offloaded_checkpointing_and_fused_loss():
    notes = " ".join(estimate(MODEL, "a10g", recipe="unsloth").notes)
    assert "offloads each layer's input to CPU" in notes and "unsloth_fused_ce_loss" in notes


def test_norms_only_preparation_keeps_embeddings_bf16_and_norms_fp32():
    model = resolve_model(MODEL)
    norms = estimate(MODEL, "a10g", kbit_prep="norms")
    def rounded(group, nbytes):
        return group.count * (-(-group.numel * nbytes // 512) * 512)
    expected = (sum(rounded(g, 2) for g in embedding_groups(model)) + sum(rounded(g, 4) for g in norm_groups(model)))
    assert norms.float_weights == expected
    full = estimate(MODEL, "a10g", kbit_prep=True)
    none = estimate(MODEL, "a10g", kbit_prep=False)
    assert none.float_weights < norms.float_weights < full.float_weights


def test_kbit_prep_words_and_the_old_flag():
    assert make_run(kbit_prep="full").kbit_prep is True and make_run(kbit_prep="none").kbit_prep is False
    for flags, expected in ((["--no-kbit-prep"], False), (["--kbit-prep", "norms"], "norms"),
                            (["--kbit-prep", "full"], True)):
        done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "fit", "--json", *flags],
                              capture_output=True, text=True)
        assert json.loads(done.stdout)["run"]["kbit_prep"] == expected


def test_fit_prints_the_stack_in_its_first_line_and_json():
    done = subprocess.run([sys.executable, "-m", "vramplan.cli.main", "fit", "--model", MODEL, "--gpu", "a10g",
                           "--stack", "transformers=4.46,bitsandbytes=0.43.1"], capture_output=True, text=True)
    first = done.stdout.splitlines()[0]
    assert first.endswith("stack: transformers 4.46, peft 0.21, bitsandbytes 0.43.1, torch 2.13 (explicit)")
    data = json.loads(subprocess.run([sys.executable, "-m", "vramplan.cli.main", "fit", "--json", "--recipe",
                                      "axolotl"], capture_output=True, text=True).stdout)
    assert data["stack"]["recipe"] == "axolotl" and data["stack"]["transformers"] == "5.24"
    assert data["stack"]["source"] == "VRAMPLAN_STACK=current"
