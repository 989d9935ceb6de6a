"""The terms the trace simulator's live sets added to the analytic model, recomputed by hand
from the architecture (Llama-3.1-8B: h 4096, i 14336, 32 heads, 8 KV heads, head_dim 128)."""
import numpy as np

from vramplan.catalog import get_model
from vramplan.estimate import make_run
from vramplan.gpus import get_gpu
from vramplan.memory import activations
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.plan import phase_components

LLAMA = get_model("llama-3.1-8b")
H100 = get_gpu("h100")
H, I = 4096, 14336


def _dtypes(run):
    return resolve_dtypes(run, H100, LLAMA)


def test_final_norm_saves_its_fp32_input_and_holds_its_output_through_the_loss():
    run = make_run(method="qlora")  # fp32 residual stream after k-bit preparation
    forward, backward = activations.final_norm_bytes_per_token(LLAMA, run, _dtypes(run))
    assert backward == 4 * H + 4  # fp32 input and rstd
    assert forward == backward + 4 * H  # plus the fp32 output held by ForCausalLM.forward
    tokens = 512
    gc = phase_components(LLAMA, H100, run.model_copy(update={"gradient_checkpointing": True}),
                          micro_batch_size=1, seq_len=tokens)
    checkpoints = 32 * tokens * 4 * H
    assert gc["loss_backward"]["activations"] == checkpoints + tokens * backward


def test_first_layer_saves_no_norm_input_or_qkv_dropout_masks_when_embeddings_are_frozen():
    qlora = make_run(method="qlora", lora_dropout=0.05)
    assert activations.first_layer_unsaved_per_token(LLAMA, qlora, _dtypes(qlora)) == 4 * H + 4 + 3 * H
    no_dropout = qlora.model_copy(update={"lora_dropout": 0.0})
    assert activations.first_layer_unsaved_per_token(LLAMA, no_dropout, _dtypes(no_dropout)) == 4 * H + 4
    for trained_input in (make_run(method="full"), make_run(method="lora", gradient_checkpointing=True)):
        assert activations.first_layer_unsaved_per_token(LLAMA, trained_input, _dtypes(trained_input)) == 0


def test_layer_backward_transient_is_the_down_proj_backward_moment_under_nf4():
    """QLoRA, no checkpointing, 512 tokens: the incoming fp32 gradient (4h), its bf16 cast (2h),
    grad_x (2i), the LoRA branch's fp32 input gradient (4i) and the dequantized 4096 x 14336 weight."""
    run = make_run(method="qlora", gradient_checkpointing=False)
    tokens = 512
    got = activations.layer_backward_transient_bytes(LLAMA, run, _dtypes(run), tokens, tokens)
    assert got == (4 * H + 2 * H + 2 * I + 4 * I) * tokens + 2 * H * I


def test_layer_backward_transient_becomes_the_gated_product_backward_at_long_sequences():
    run = make_run(method="qlora", gradient_checkpointing=False)
    tokens = 16384  # 3 x 4 i per token outgrows the dequantized weight
    got = activations.layer_backward_transient_bytes(LLAMA, run, _dtypes(run), tokens, tokens)
    assert got == (3 * 4 * I + 4 * H) * tokens


def test_layer_backward_transient_is_vectorized():
    run = make_run(method="qlora", gradient_checkpointing=True)
    tokens = np.array([512.0, 16384.0])
    got = activations.layer_backward_transient_bytes(LLAMA, run, _dtypes(run), tokens, tokens)
    for k, n in enumerate(tokens):
        assert got[k] == activations.layer_backward_transient_bytes(LLAMA, run, _dtypes(run), int(n), int(n))


def test_prefill_holds_the_embedding_output_and_the_layer_input_beside_the_mlp():
    run = make_run(method="inference")
    per_token = activations.inference_transient_per_token(LLAMA, _dtypes(run), run, 512, 576)
    assert per_token == 2 * 2 * H + 2 * 2 * H + 3 * 2 * I  # bf16: held 2h, residual + norm out, 3 i


def test_fused_gate_up_keeps_its_two_halves_beside_the_activation_and_product():
    phi3 = get_model("phi-3-mini-4k")
    run = make_run(method="inference")
    h, i = phi3.hidden_size, phi3.intermediate_size
    assert activations.inference_transient_per_token(phi3, _dtypes(run)) == 2 * 2 * h + 2 * 2 * h + 4 * 2 * i


def test_eager_prefill_counts_scores_softmax_masks_and_repeated_kv_over_the_cache_length():
    gemma = get_model("gemma-2-2b")  # transformers runs Gemma-2 eager; sliding + global masks
    run = make_run(method="inference")
    seq, keys = 1024, 1088
    c, heads, h, q = 2, gemma.num_attention_heads, gemma.hidden_size, gemma.q_dim
    eager = c * h + (c + 8) * heads * keys + 2 * c * keys + c * q + 2 * c * q * keys // seq
    got = activations.inference_transient_per_token(gemma, resolve_dtypes(run, H100, gemma), run, seq, keys)
    assert got == 2 * c * h + eager
