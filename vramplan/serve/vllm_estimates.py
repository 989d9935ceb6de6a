"""What vLLM measures at start-up and vramplan can only estimate: the profiled activation peak, the
non-torch increase and the CUDA-graph pool. Each is our formula, checked against published start-up
logs (validation/published/serving/vllm_startup.toml), not a vLLM rule.
"""
from __future__ import annotations

GIB = 1 << 30

# Published "non_torch_memory takes X GiB" on one GPU / per rank with tensor parallelism.
NON_TORCH_BYTES_ONE_GPU = int(0.35 * GIB)  # Llama-3.1-8B, RTX 3090 (vllm-project/vllm issue 10517)
NON_TORCH_BYTES_TENSOR_PARALLEL = int(0.43 * GIB)  # Qwen2.5-VL-72B TP=4, A100-40G (issue 16570), NCCL buffers
SAMPLER_BYTES_PER_LOGIT = 8  # fp32 logits + fp32 probabilities in the dummy sampler run
LARGEST_CUDA_GRAPH_TOKENS = 512  # vLLM's default max_cudagraph_capture_size = min(2 x max_num_seqs, 512)


def forward_activation_bytes(tokens: int, hidden_size: int, mlp_width_per_gpu: int, activation_bytes: int) -> int:
    """tokens x (2 x hidden + 3 x MLP width) x bytes: at the MLP of one layer the residual and the normed
    input (hidden each), gate_up's output (2 x width) and the activation's output (width) are alive.
    Checked: 2.15 GiB and 3.01 GiB against the 2.07 and 2.99 GiB vLLM profiled for Llama-3.1-8B at 20000
    and 29000 tokens (issue 10517)."""
    return tokens * (2 * hidden_size + 3 * mlp_width_per_gpu) * activation_bytes


def sampler_bytes(max_num_seqs: int, vocab_size: int) -> int:
    """max_num_seqs x vocab x 8 B: the dummy sampler run after the profiled forward (gpu_model_runner
    profile_run -> _dummy_sampler_run) holds one fp32 logit row and one fp32 probability row per sequence."""
    return max_num_seqs * vocab_size * SAMPLER_BYTES_PER_LOGIT


def activation_peak_bytes(model, max_num_batched_tokens: int, max_num_seqs: int, tensor_parallel_size: int,
                          activation_bytes: int = 2) -> int:
    """The profiled peak: a forward of max_num_batched_tokens tokens (gpu_worker.determine_available_memory
    -> profile_run), then the sampler. MoE layers run experts_per_tok experts per token."""
    width = model.intermediate_size * model.num_experts_per_tok // tensor_parallel_size
    forward = forward_activation_bytes(max_num_batched_tokens, model.hidden_size, width, activation_bytes)
    return forward + sampler_bytes(max_num_seqs, model.vocab_size)


def non_torch_bytes(tensor_parallel_size: int) -> int:
    """Memory outside torch's allocator that grows during profiling (cuBLAS/NCCL workspaces): the largest
    published figures, 0.35 GiB on one GPU and 0.43 GiB per rank with tensor parallelism."""
    return NON_TORCH_BYTES_ONE_GPU if tensor_parallel_size == 1 else NON_TORCH_BYTES_TENSOR_PARALLEL


def cuda_graph_bytes(model, max_num_seqs: int, tensor_parallel_size: int, enforce_eager: bool,
                     activation_bytes: int = 2) -> int:
    """A lower bound for the CUDA-graph pool: the forward activations of the largest captured batch,
    min(2 x max_num_seqs, 512) tokens; 0 with --enforce-eager. Published captures took 0.14 to 3.74 GiB
    (graph count and FULL/PIECEWISE mode matter more than size), so this is a floor, not a figure."""
    if enforce_eager:
        return 0
    tokens = min(2 * max_num_seqs, LARGEST_CUDA_GRAPH_TOKENS)
    width = model.intermediate_size * model.num_experts_per_tok // tensor_parallel_size
    return forward_activation_bytes(tokens, model.hidden_size, width, activation_bytes)
