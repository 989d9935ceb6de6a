"""The vLLM serving plan: vLLM's KV-pool rules, published start-up logs, solvers, advice, and `vramplan serve`."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from vramplan.cli.main import main
from vramplan.errors import InputError
from vramplan.gpus import get_gpu, list_gpus
from vramplan.resolve import resolve_model
from vramplan.serve import vllm_rules as rules
from vramplan.serve.vllm import VllmSettings, plan_vllm
from vramplan.serve.vllm_published import all_checks, load_runs
from vramplan.serve.vllm_solvers import advise, max_concurrent_requests, max_context, smallest_gpu

GIB = 1 << 30


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse refuses a value before the command runs
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


# --- vLLM's rules --------------------------------------------------------------------------------

def test_page_size_is_k_and_v_times_block_heads_head_dim_dtype():
    assert rules.page_size_bytes(16, 8, 128, 2) == 2 * 16 * 8 * 128 * 2 == 65_536
    assert rules.page_size_bytes(16, 8, 128, 1) == 32_768


def test_kv_heads_split_over_tensor_parallel_ranks_and_replicated_past_them():
    assert rules.kv_heads_per_gpu(8, 2) == 4
    assert rules.kv_heads_per_gpu(8, 16) == 1


def test_uniform_model_blocks_tokens_and_concurrency_follow_kv_cache_utils():
    layout = rules.KVLayout(32, 0, 0, rules.page_size_bytes(16, 8, 128, 2))
    available = 4 * GIB + 12345
    blocks = rules.num_gpu_blocks(available, layout)
    assert blocks == available // 65_536 // 32 == 2048
    assert rules.kv_cache_tokens(blocks, layout, 16) == 32_768
    assert rules.max_concurrency(blocks, layout, 32_768, 16, 2048) == 1.0
    assert rules.max_concurrency(blocks, layout, 32_769, 16, 2048) == 2048 / 2049


def test_gemma3_hybrid_layers_group_by_the_smaller_count_and_log_tokens_per_group():
    model = resolve_model("gemma-3-12b")
    plan = plan_vllm(model, get_gpu("a100-80g"), VllmSettings())
    assert (plan.full_layers, plan.sliding_layers) == (8, 40)
    assert plan.kv_groups == 6 and plan.block_bytes == 8 * plan.page_bytes
    assert plan.kv_cache_tokens == plan.num_blocks // 6 * 16
    # one request: full layers hold max_model_len, sliding layers window - 1 + batched tokens, + 1 block
    sliding_blocks = rules.cdiv(1024 - 1 + plan.max_num_batched_tokens, 16) + 1
    per_request = rules.cdiv(plan.max_model_len, 16) + 5 * sliding_blocks
    assert plan.needed_kv_bytes == plan.block_bytes * per_request
    assert plan.max_concurrency == plan.num_blocks / per_request


def test_gemma2_equal_halves_make_two_groups_of_all_their_layers():
    layout = rules.KVLayout(21, 21, 4096, 1024)
    assert layout.group_size == 21 and layout.num_groups == 2


def test_padded_group_counts_its_padding_layers():
    layout = rules.KVLayout(4, 22, 512, 1024)  # Gemma-3-1B: 26 layers, every 6th global
    assert layout.group_size == 4 and layout.sliding_groups == 6  # 24 sliding slots for 22 layers
    assert rules.needed_kv_bytes(layout, 32768, 16, 2048) == 4 * 1024 * (2048 + 6 * (rules.cdiv(2559, 16) + 1))


def test_mistral_v01_sliding_window_without_layer_types_is_full_attention_in_vllm():
    plan = plan_vllm(resolve_model("mistral-7b"), get_gpu("l4"), VllmSettings(weight_format="awq-4bit"))
    assert plan.sliding_layers == 0 and plan.full_layers == 32


def test_estimated_max_model_len_is_the_largest_that_fits():
    layout = rules.KVLayout(48, 0, 0, rules.page_size_bytes(16, 4, 128, 2))
    available = 3 * GIB
    best = rules.estimate_max_model_len(layout, available, 262_144, 16, 2048)
    assert rules.needed_kv_bytes(layout, best, 16, 2048) <= available < rules.needed_kv_bytes(layout, best + 1, 16, 2048)
    assert rules.estimate_max_model_len(layout, 10, 262_144, 16, 2048) == 0


def test_start_up_error_text_matches_vllm_issue_34076():
    layout = rules.KVLayout(48, 0, 0, rules.page_size_bytes(16, 4, 128, 2))
    available = 2171 * layout.block_bytes  # prints as 3.18 GiB
    needed = rules.needed_kv_bytes(layout, 262_144, 16, 2048)
    estimated = rules.estimate_max_model_len(layout, available, 262_144, 16, 2048)
    text = rules.not_enough_kv_cache_error(262_144, needed, available, estimated)
    published = ("To serve at least one request with the models's max seq len (262144), (24.0 GiB KV cache is "
                 "needed, which is larger than the available KV cache memory (3.18 GiB). Based on the available "
                 "memory, the estimated maximum model length is 34736. Try increasing `gpu_memory_utilization` or "
                 "decreasing `max_model_len` when initializing the engine. See https://docs.vllm.ai/en/latest/"
                 "configuration/conserving_memory/ for mo")
    assert text.startswith(published)


def test_batch_defaults_follow_arg_utils():
    assert rules.default_batch_limits(80 * GIB, "NVIDIA H100 80GB HBM3") == (8192, 1024)
    assert rules.default_batch_limits(80 * GIB, "NVIDIA A100-SXM4-80GB") == (2048, 256)
    assert rules.default_batch_limits(24 * GIB, "NVIDIA L4") == (2048, 256)


# --- published start-up logs ---------------------------------------------------------------------

def test_published_rows_cite_a_github_url_date_and_version():
    for run in load_runs():
        assert run["url"].startswith("https://github.com/")
        assert run["date"][:2] == "20" and run["vllm_version"] and run["engine"] in ("V0", "V1")


def test_published_block_counts_concurrency_and_error_lines_are_reproduced():
    checks = all_checks()
    by_status = {}
    for check in checks:
        by_status.setdefault(check.status, []).append((check.run_id, check.what))
    assert len(by_status["exact"]) == 7 and len(by_status["within rounding"]) == 4
    # What does not match, and only that: end-to-end predictions (estimates) and the TP=4 row.
    assert sorted(by_status["differs"]) == [
        ("issue10517-llama3.1-8b-3090-20k", "blocks predicted from specs"),
        ("issue10517-llama3.1-8b-3090-29k", "blocks predicted from specs"),
        ("issue21348-qwen3-235b-fp8-tp4", "blocks from available memory"),
    ]


def test_end_to_end_predictions_from_specs_are_within_two_percent_of_published_blocks():
    for check in all_checks():
        if check.what == "blocks predicted from specs":
            printed = int(check.printed.replace(",", ""))
            predicted = int(check.reproduced.split()[0].replace(",", ""))
            assert abs(predicted - printed) / printed < 0.02


# --- the plan, its laws and solvers ----------------------------------------------------------------

MISTRAL_L4 = {"weight_format": "awq-4bit", "max_model_len": 32768}


def test_mistral_awq_on_l4_at_32k_starts_with_the_pool_the_rules_give():
    plan = plan_vllm(resolve_model("mistral-7b"), get_gpu("l4"), VllmSettings(**MISTRAL_L4))
    assert plan.fits and plan.startup_error is None
    assert plan.available_kv_bytes == plan.requested_bytes - plan.weights_bytes - plan.activation_peak_bytes - plan.non_torch_bytes
    assert plan.num_blocks == plan.available_kv_bytes // plan.page_bytes // 32
    assert plan.kv_cache_tokens == plan.num_blocks * 16
    assert plan.max_concurrency == plan.num_blocks / 2048
    assert plan.quantization == "awq"


def test_pool_falls_as_utilization_falls_and_fp8_doubles_the_blocks():
    model, gpu = resolve_model("llama-3.1-8b"), get_gpu("a100-80g")
    previous = None
    for utilization in (0.95, 0.9, 0.8, 0.6, 0.4, 0.3):
        blocks = plan_vllm(model, gpu, VllmSettings(gpu_memory_utilization=utilization)).num_blocks
        assert previous is None or blocks <= previous
        previous = blocks
    auto = plan_vllm(model, gpu, VllmSettings()).num_blocks
    fp8 = plan_vllm(model, gpu, VllmSettings(kv_cache_dtype="fp8")).num_blocks
    assert 2 * auto <= fp8 <= 2 * auto + 1


def test_tensor_parallel_splits_weights_and_kv_heads():
    model, gpu = resolve_model("llama-3.1-70b"), get_gpu("h100-sxm")
    one = plan_vllm(model, gpu, VllmSettings(weight_format="awq-4bit"))
    four = plan_vllm(model, gpu, VllmSettings(weight_format="awq-4bit", tensor_parallel_size=4))
    assert four.weights_bytes == rules.cdiv(one.weights_bytes, 4)
    assert four.kv_heads_per_gpu == 2 and four.page_bytes == one.page_bytes // 4


def test_pool_too_small_gives_vllms_error_and_the_largest_length_that_starts():
    model, gpu = resolve_model("llama-3.1-8b"), get_gpu("l4")
    plan = plan_vllm(model, gpu, VllmSettings())
    assert not plan.fits and plan.startup_error.startswith("To serve at least one request with the models's max seq len (131072)")
    largest = max_context(model, gpu, VllmSettings())
    assert 0 < largest < 131072 and f"estimated maximum model length is {largest}." in plan.startup_error
    assert plan_vllm(model, gpu, VllmSettings(max_model_len=largest)).fits
    assert not plan_vllm(model, gpu, VllmSettings(max_model_len=largest + 1)).fits


def test_utilization_above_free_memory_is_vllms_free_memory_error():
    plan = plan_vllm(resolve_model("qwen2.5-0.5b"), get_gpu("l4"), VllmSettings(gpu_memory_utilization=1.0))
    assert not plan.fits and plan.startup_error.startswith("Free memory on device cuda:0 (")
    assert plan.startup_error.endswith("on startup is less than desired GPU memory utilization (1.0, 22.03 GiB). "
                                       "Decrease GPU memory utilization or reduce GPU memory used by other processes.")


def test_utilization_above_free_memory_is_advised_down_first():
    model, gpu = resolve_model("qwen2.5-0.5b"), get_gpu("l4")
    changes = advise(model, gpu, VllmSettings(gpu_memory_utilization=1.0), list_gpus())
    assert changes[0].flags.startswith("--gpu-memory-utilization 0.9")
    utilization = float(changes[0].flags.split()[-1])
    assert plan_vllm(model, gpu, VllmSettings(gpu_memory_utilization=utilization)).fits


def test_concurrent_requests_are_capped_by_max_num_seqs():
    model, gpu = resolve_model("qwen2.5-0.5b"), get_gpu("h100-sxm")
    settings = VllmSettings(max_model_len=1024, max_num_seqs=8)
    assert plan_vllm(model, gpu, settings).max_concurrency > 8
    assert max_concurrent_requests(model, gpu, settings) == 8


def test_smallest_gpu_starts_and_every_smaller_profile_does_not():
    model = resolve_model("llama-3.1-8b")
    settings = VllmSettings(max_model_len=32768)
    best = smallest_gpu(model, list_gpus(), settings)
    assert plan_vllm(model, best, settings).fits and best.vendor in ("nvidia", "amd")
    for gpu in list_gpus():
        if gpu.total_memory_bytes < best.total_memory_bytes and gpu.vendor in ("nvidia", "amd"):
            try:
                assert not plan_vllm(model, gpu, settings).fits
            except InputError:
                pass


def test_advice_comes_cheapest_first_and_every_change_starts():
    model, gpu = resolve_model("llama-3.1-8b"), get_gpu("l4")
    settings = VllmSettings(max_model_len=65536)
    changes = advise(model, gpu, settings, list_gpus())
    names = [change.name for change in changes]
    assert names[0].startswith("fp8 KV cache") and names[1] == "a shorter max-model-len"
    order = ["fp8", "shorter", "fewer", "tensor", "smaller quant", "larger GPU"]
    positions = [next(i for i, key in enumerate(order) if key in name) for name in names]
    assert positions == sorted(positions)
    assert all(change.kv_cache_tokens > 0 for change in changes)


def test_bad_settings_are_one_line_input_errors():
    model, gpu = resolve_model("llama-3.1-8b"), get_gpu("l4")
    for settings, flag in ((VllmSettings(gpu_memory_utilization=1.5), "--gpu-memory-utilization"),
                           (VllmSettings(tensor_parallel_size=3), "--tensor-parallel-size"),
                           (VllmSettings(max_model_len=10**6), "--max-model-len"),
                           (VllmSettings(block_size=24), "--block-size"),
                           (VllmSettings(weight_format="gguf-q4_k_m"), "--format"),
                           (VllmSettings(quantization="awq", weight_format="gptq-4bit"), "--format")):
        with pytest.raises(InputError) as caught:
            plan_vllm(model, gpu, settings)
        assert caught.value.field == flag and "\n" not in str(caught.value)


# --- the CLI -------------------------------------------------------------------------------------

def test_serve_vllm_prints_the_plan_and_vllms_log_lines(capsys):
    code, out, err = run_cli(capsys, "serve", "--engine", "vllm", "--model", "mistral-7b", "--format", "awq-4bit",
                             "--gpu", "l4", "--max-model-len", "32768")
    plan = plan_vllm(resolve_model("mistral-7b"), get_gpu("l4"), VllmSettings(**MISTRAL_L4))
    assert code == 0 and err == ""
    assert f"GPU KV cache size: {plan.kv_cache_tokens:,} tokens" in out
    assert f"Maximum concurrency for 32,768 tokens per request: {plan.max_concurrency:.2f}x" in out


def test_serve_json_is_the_plan(capsys):
    code, out, _ = run_cli(capsys, "serve", "--model", "llama-3.1-8b", "--gpu", "l4", "--json")
    data = json.loads(out)
    assert code == 1 and data["fits"] is False and data["engine"] == "vllm"
    assert data["startup_error"].startswith("To serve at least one request")
    assert data["advice"] and data["smallest_gpu"]


@pytest.mark.parametrize("argv, flag", [
    (["--engine", "hf", "--max-model-len", "4096"], "--max-model-len: belongs to --engine vllm, not hf"),
    (["--engine", "vllm", "--seq", "128"], "--seq: belongs to --engine hf, not vllm"),
    (["--tensor-parallel-size", "3"], "--tensor-parallel-size"),
    (["--format", "gguf-q4_k_m"], "--format"),
    (["--host-ram", "64GiB"], "--host-ram"),
    (["--gpu-memory-utilization", "0"], "--gpu-memory-utilization"),
    (["--gpu-memory-utilization", "nan"], "--gpu-memory-utilization"),
    (["--max-model-len", "1_000"], "--max-model-len"),
    (["--max-model-len", "99999999999"], "--max-model-len"),
    (["--engine", "hf", "--seq", "-1"], "--seq"),
    (["--engine", "hf", "--host-ram", "64GiB"], "--host-ram"),
])
def test_serve_bad_input_exits_2_with_one_line(capsys, argv, flag):
    code, out, err = run_cli(capsys, "serve", "--model", "llama-3.1-8b", "--gpu", "l4", *argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and flag in err and err.count("\n") == 1


def test_llama_cpp_is_registered_exactly_when_its_module_exists():
    import importlib.util

    from vramplan.cli.serve import ENGINES

    assert ("llama.cpp" in ENGINES) == (importlib.util.find_spec("vramplan.serve.llamacpp") is not None)
    assert {"vllm", "hf"} <= set(ENGINES)


def test_serve_unknown_engine_is_a_usage_error():
    with pytest.raises(SystemExit) as caught:
        main(["serve", "--engine", "tgi"])
    assert caught.value.code == 2


def test_serve_hf_engine_is_the_inference_plan(capsys):
    from vramplan.estimate import estimate

    code, out, _ = run_cli(capsys, "serve", "--engine", "hf", "--model", "llama-3.1-8b", "--gpu", "l4", "--seq", "1000",
                           "--json")
    data = json.loads(out)
    expected = estimate(model="llama-3.1-8b", gpu="l4", method="inference", seq_len=1000)
    assert data["engine"] == "hf" and data["peak_allocated_bytes"] == expected.peak_allocated_bytes
    assert code == (0 if expected.fits else 1)


def test_serve_plot_writes_a_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "concurrency.png"
    code, out, _ = run_cli(capsys, "serve", "--model", "qwen2.5-0.5b", "--gpu", "l4", "--max-model-len", "8192",
                           "--plot", str(target), "--plot-gpus", "l4,t4")
    assert code == 0 and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in out


def test_concurrency_curves_are_the_solver_answers():
    from vramplan.plots.serve_concurrency import concurrency_curves

    model, gpus = resolve_model("qwen2.5-7b"), [get_gpu("l4"), get_gpu("t4")]
    curves = concurrency_curves(model, gpus, VllmSettings(weight_format="awq-4bit"), lengths=(2048, 8192))
    for j, gpu in enumerate(gpus):
        for k, length in enumerate(curves.lengths):
            settings = VllmSettings(weight_format="awq-4bit", max_model_len=length)
            assert curves.requests[j][k] == max_concurrent_requests(model, gpu, settings)
    assert all(row[0] >= row[1] for row in curves.requests)


# --- laws ----------------------------------------------------------------------------------------

LAW_MODELS = ("llama-3.1-8b", "gemma-2-9b", "gemma-3-12b", "qwen2.5-7b", "mistral-7b")
LAW_GPUS = ("l4", "t4", "rtx4090", "a100-40g")


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.sampled_from(LAW_MODELS), st.sampled_from(LAW_GPUS), st.sampled_from(("auto", "fp8")),
       st.floats(0.3, 0.95), st.integers(1, 1 << 17))
def test_vllm_starts_exactly_up_to_the_largest_max_model_len(name, gpu_key, kv_dtype, utilization, length):
    model, gpu = resolve_model(name), get_gpu(gpu_key)
    length = min(length, model.max_position_embeddings)
    base = VllmSettings(weight_format="awq-4bit", kv_cache_dtype=kv_dtype, gpu_memory_utilization=utilization)
    largest = max_context(model, gpu, base)
    plan = plan_vllm(model, gpu, VllmSettings(**{**base.__dict__, "max_model_len": length}))
    assert plan.fits == (length <= largest)


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.sampled_from(LAW_MODELS), st.sampled_from(LAW_GPUS), st.integers(1, 1 << 16), st.integers(1, 1 << 16))
def test_concurrency_never_rises_as_requests_grow(name, gpu_key, shorter, longer):
    model, gpu = resolve_model(name), get_gpu(gpu_key)
    shorter, longer = sorted((min(shorter, model.max_position_embeddings), min(longer, model.max_position_embeddings)))
    base = VllmSettings(weight_format="awq-4bit", max_model_len=longer)
    plan = plan_vllm(model, gpu, VllmSettings(**{**base.__dict__, "typical_len": shorter}))
    assert plan.concurrency_at_typical >= plan.max_concurrency
