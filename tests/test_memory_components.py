"""Each memory component recomputed in the test from the architecture, on known cases."""
from __future__ import annotations

import math

import pytest

from vramplan.catalog import get_model
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.memory import activations, kv_cache, logits, lora, optimizer, weights
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.plan import base_weight_bytes, phase_components

LLAMA2_7B = get_model("7b")
LLAMA31_8B = get_model("8b")
A100 = get_gpu("a100-80g")

# Llama-2-7B decoder linears: q,k,v,o 4096x4096; gate,up 11008x4096; down 4096x11008; 32 layers.
LLAMA2_7B_LINEARS = [4096 * 4096] * 4 + [4096 * 11008] * 3


def round512(n: int) -> int:
    return max(512, math.ceil(n / 512) * 512)


def test_nf4_bytes_per_param_match_the_qlora_paper():
    numel = 64 * 256 * 1000
    single = weights.nf4_state_tensor_bytes(numel, 64, double_quant=False)
    double = weights.nf4_state_tensor_bytes(numel, 64, double_quant=True)
    per_param_single = (single["packed"] + single["absmax"]) / numel
    per_param_double = (double["packed"] + double["absmax"] + double["nested_absmax"]) / numel
    assert per_param_single == pytest.approx(0.5 + 4 / 64)  # 0.5625
    assert per_param_double == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))  # 0.515869
    assert double["quant_map"] == 16 * 4 and double["nested_quant_map"] == 256 * 4 and double["offset"] == 4


def test_nf4_odd_sizes_round_up_blocks_and_bytes():
    sizes = weights.nf4_state_tensor_bytes(65, 64, double_quant=True)
    assert sizes["packed"] == 33  # ceil(65/2)
    assert sizes["absmax"] == 2  # two blocks, one uint8 each
    assert sizes["nested_absmax"] == 4  # one nested block


def test_llama2_7b_nf4_double_quant_weights():
    run = make_run(method="qlora")
    dtypes = resolve_dtypes(run, A100, LLAMA2_7B)
    static = base_weight_bytes(LLAMA2_7B, run, dtypes)
    layers = 32
    packed = sum(n // 2 for n in LLAMA2_7B_LINEARS) * layers
    state = sum(
        round512(n // 64) + round512(n // 64 // 256 * 4) + 512 + 512 + 1024  # absmax, nested, offset, map, nested map
        for n in LLAMA2_7B_LINEARS) * layers
    assert static.quantized_weights == packed == 3_238_002_688
    assert static.quant_state == state
    # prepare_model_for_kbit_training: embeddings, lm_head, norms in fp32
    float_params = 2 * 32000 * 4096 + (2 * 32 + 1) * 4096
    assert static.float_weights == pytest.approx(float_params * 4, abs=512 * 3)


def test_lora_r16_on_q_and_v_of_llama2_7b():
    count = lora.lora_parameter_count(LLAMA2_7B, ("q_proj", "v_proj"), 16)
    assert count == 32 * 2 * 16 * (4096 + 4096) == 8_388_608  # peft prints this figure
    assert lora.lora_adapter_bytes(LLAMA2_7B, ("q_proj", "v_proj"), 16, 4) == count * 4


def test_lora_all_linear_covers_every_decoder_linear():
    per_layer = 16 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert lora.lora_parameter_count(LLAMA2_7B, ("all-linear",), 16) == 32 * per_layer


def test_unknown_lora_target_is_an_input_error_listing_the_allowed_names():
    from vramplan.errors import InputError

    with pytest.raises(InputError, match="lora_targets.*allowed: .*q_proj"):
        lora.targeted_linears(LLAMA2_7B, ("qproj",))


def test_adamw_32bit_state_is_two_fp32_copies_of_the_adapters():
    groups = lora.lora_tensor_groups(LLAMA2_7B, ("q_proj", "v_proj"), 16)
    device, paged = optimizer.optimizer_state_bytes("adamw", groups, 4)
    assert (device, paged) == (2 * 4 * 8_388_608, 0)
    assert optimizer.optimizer_step_temp_bytes("adamw", groups, 4) == 4 * 8_388_608  # foreach sqrt copy
    assert optimizer.optimizer_step_temp_bytes("adamw_fused", groups, 4) == 0


def test_8bit_adam_is_two_bytes_plus_absmax_per_256():
    groups = lora.lora_tensor_groups(LLAMA2_7B, ("q_proj", "v_proj"), 16)  # 128 tensors of 65,536
    device, paged = optimizer.optimizer_state_bytes("adamw_8bit", groups, 4)
    per_tensor = 2 * 65536 + 2 * round512(65536 // 256 * 4)
    assert device == 128 * per_tensor + 2 * 1024 and paged == 0


def test_paged_optimizer_pages_only_tensors_of_at_least_1e5_elements():
    small = lora.lora_tensor_groups(LLAMA2_7B, ("q_proj",), 16)  # 65,536 < 1e5: stays on device
    large = lora.lora_tensor_groups(LLAMA2_7B, ("q_proj",), 32)  # 131,072 >= 1e5: paged
    assert optimizer.optimizer_state_bytes("paged_adamw", small, 4)[1] == 0
    device, paged = optimizer.optimizer_state_bytes("paged_adamw", large, 4)
    assert device == 0 and paged == 64 * 2 * 4 * 131072


def test_8bit_adam_keeps_32bit_state_below_4096_elements():
    from vramplan.memory.parameters import TensorGroup

    tiny = [TensorGroup("t", 64, 32, 1)]  # 2048 elements
    assert optimizer.optimizer_state_bytes("adamw_8bit", tiny, 4)[0] == 2 * 2048 * 4 + 2 * 1024


def test_sgd_and_adafactor_states():
    from vramplan.memory.parameters import TensorGroup

    groups = [TensorGroup("w", 1024, 512, 2), TensorGroup("b", 1024, 1, 2, ndim=1)]
    assert optimizer.optimizer_state_bytes("sgd", groups, 4) == (0, 0)
    assert optimizer.optimizer_state_bytes("sgd_momentum", groups, 4)[0] == 2 * (1024 * 512 * 4) + 2 * 4096
    # factored: row (1024) + col (512) for the matrix, full for the vector, fp32 even for bf16
    # parameters; each tensor also keeps a 0-dim RMS tensor (one 512 B block)
    expected = 2 * (4096 + 2048 + 512) + 2 * (4096 + 512)
    assert optimizer.optimizer_state_bytes("adafactor", groups, 4)[0] == expected
    assert optimizer.optimizer_state_bytes("adafactor", groups, 2)[0] == expected


def test_kv_cache_uses_key_value_heads_not_attention_heads():
    run = make_run(method="inference", micro_batch_size=2, seq_len=1000, max_new_tokens=24)
    dtypes = resolve_dtypes(run, A100, LLAMA31_8B)
    expected = 2 * 32 * 2 * 1024 * (8 * 128) * 2  # K and V, layers, batch, tokens, kv heads x head_dim, bf16
    assert kv_cache.kv_cache_bytes(LLAMA31_8B, dtypes, 2, 1024) == expected
    phases = phase_components(LLAMA31_8B, A100, run, dtypes)
    assert phases["generate"]["kv_cache"] == expected


def test_logits_and_loss_for_a_128k_vocabulary():
    run = make_run(method="qlora", micro_batch_size=2, seq_len=1024)
    dtypes = resolve_dtypes(run, A100, LLAMA31_8B)
    forward, backward = logits.logits_loss_bytes(LLAMA31_8B, run, dtypes, 2, 1024)
    tokens, vocab = 2048, 128256
    lm_head_copy = vocab * 4096 * 2  # fp32 lm_head cast to bf16 by autocast, saved by matmul
    assert forward == (2 + 4 + 4) * tokens * vocab + lm_head_copy
    assert backward == 12 * tokens * vocab + lm_head_copy
    chunked = make_run(method="qlora", micro_batch_size=2, seq_len=1024, loss_impl="chunked")
    chunked_backward = logits.logits_loss_bytes(LLAMA31_8B, chunked, dtypes, 2, 1024)[1]
    assert chunked_backward - lm_head_copy == (4 + 8 / 8) * tokens * vocab


def test_sdpa_has_no_quadratic_term_and_eager_does():
    run = make_run(method="qlora", attention="sdpa")
    eager = make_run(method="qlora", attention="eager")
    dtypes = resolve_dtypes(run, A100, LLAMA2_7B)
    sdpa_1k = sum(activations.saved_bytes_per_token(LLAMA2_7B, run, dtypes, 1024).values())
    sdpa_8k = sum(activations.saved_bytes_per_token(LLAMA2_7B, run, dtypes, 8192).values())
    eager_1k = sum(activations.saved_bytes_per_token(LLAMA2_7B, eager, dtypes, 1024).values())
    eager_8k = sum(activations.saved_bytes_per_token(LLAMA2_7B, eager, dtypes, 8192).values())
    assert sdpa_1k == sdpa_8k
    # eager saves the fp32 softmax and its bf16 copy: 6 bytes x heads x seq per token
    assert eager_8k - eager_1k == 6 * 32 * (8192 - 1024)


def test_gradient_checkpointing_keeps_one_hidden_state_per_layer():
    run = make_run(method="qlora", micro_batch_size=2, seq_len=1024, gradient_checkpointing=True)
    dtypes = resolve_dtypes(run, A100, LLAMA2_7B)
    phases = phase_components(LLAMA2_7B, A100, run, dtypes)
    held = 32 * 2 * 1024 * 4096 * 4  # fp32 residual stream after k-bit preparation
    final_norm = 2 * 1024 * (4 * 4096 + 4)  # the final RMSNorm's saved fp32 input and rstd
    assert phases["loss_backward"]["activations"] == held + final_norm
    no_gc = phase_components(LLAMA2_7B, A100, run.model_copy(update={"gradient_checkpointing": False}), dtypes)
    assert no_gc["loss_backward"]["activations"] > 5 * held


def test_full_finetuning_mixed_precision_counts_weights_grads_and_adam():
    run = make_run(method="full", full_precision="mixed", optimizer="adamw_fused")
    small = get_model("tinyllama")
    phases = phase_components(small, A100, run)
    params = 1_100_048_384
    assert phases["optimizer"]["float_weights"] == pytest.approx(4 * params, rel=1e-4)
    assert phases["optimizer"]["gradients"] == pytest.approx(4 * params, rel=1e-4)
    assert phases["optimizer"]["optimizer_state"] == pytest.approx(8 * params, rel=1e-4)


def test_qlora_needs_less_than_lora_which_needs_less_than_full():
    for model in ("7b", "8b", "qwen2.5-7b"):
        peaks = [estimate_peak(model, method) for method in ("qlora", "lora", "full")]
        assert peaks[0] < peaks[1] < peaks[2], (model, peaks)


def estimate_peak(model: str, method: str) -> int:
    return plan(get_model(model), A100, make_run(method=method)).peak_allocated_bytes


def test_gguf_q4_k_m_matches_llama_cpp_size_for_llama2_7b():
    # llama.cpp's published Llama-2-7B Q4_K_M file: 4.08 GB (3.80 GiB) for 6.74 B params.
    run = make_run(method="inference", weight_format="gguf-q4_k_m")
    static = base_weight_bytes(LLAMA2_7B, run, resolve_dtypes(run, A100, LLAMA2_7B))
    total = static.quantized_weights + static.float_weights
    assert total == pytest.approx(4.08e9, rel=0.02)


def test_t4_plans_in_fp16_and_says_so():
    breakdown = plan(get_model("13b"), get_gpu("t4"), make_run())
    assert breakdown.compute_dtype == "fp16"
    assert any("fp16" in note for note in breakdown.notes)


def test_verdict_adds_reserve_and_context_to_the_allocated_peak():
    breakdown = plan(get_model("13b"), get_gpu("t4"), make_run())
    assert breakdown.required_bytes == (breakdown.peak_allocated_bytes + breakdown.allocator_reserve_bytes
                                        + breakdown.cuda_context_bytes)
    assert breakdown.fits == (breakdown.required_bytes <= breakdown.capacity_bytes)
    assert breakdown.peak_allocated_bytes == max(breakdown.phase_peaks.values())
    assert sum(v for k, v in breakdown.components().items()
               if k not in ("allocator_reserve", "cuda_context")) == breakdown.peak_allocated_bytes
