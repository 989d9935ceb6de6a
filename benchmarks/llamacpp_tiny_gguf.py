"""Write tiny GGUF language models with the `gguf` package (gguf-py), for the GGUF reader's tests and
the llama.cpp agreement benchmark. Random weights: the point is the tensor layout, not the text.

Architectures: llama (untied output), qwen2 (q/k/v biases), gemma2 (tied output, four norms per
layer, interleaved sliding window). Types: whatever gguf-py can quantize (f32, f16, q8_0, q4_0, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyModel:
    arch: str = "llama"
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_vocab: int = 512
    n_ctx_train: int = 2048
    weight_type: str = "f16"  # linear weights; norms and biases stay f32
    n_swa: int = 128  # gemma2 only

    @property
    def name(self) -> str:
        return f"tiny-{self.arch}-{self.weight_type}-L{self.n_layer}-E{self.n_embd}"


def tiny_tensors(m: TinyModel) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, ggml shape, quantized?) of every tensor, in the order they are written."""
    head_dim, out = m.n_embd // m.n_head, []
    kv = head_dim * m.n_head_kv

    def add(name, shape, quantized):
        out.append((name, shape, quantized))

    add("token_embd.weight", (m.n_embd, m.n_vocab), True)
    for il in range(m.n_layer):
        add(f"blk.{il}.attn_norm.weight", (m.n_embd,), False)
        add(f"blk.{il}.attn_q.weight", (m.n_embd, m.n_head * head_dim), True)
        add(f"blk.{il}.attn_k.weight", (m.n_embd, kv), True)
        add(f"blk.{il}.attn_v.weight", (m.n_embd, kv), True)
        add(f"blk.{il}.attn_output.weight", (m.n_head * head_dim, m.n_embd), True)
        if m.arch == "qwen2":
            add(f"blk.{il}.attn_q.bias", (m.n_head * head_dim,), False)
            add(f"blk.{il}.attn_k.bias", (kv,), False)
            add(f"blk.{il}.attn_v.bias", (kv,), False)
        if m.arch == "gemma2":
            add(f"blk.{il}.post_attention_norm.weight", (m.n_embd,), False)
            add(f"blk.{il}.post_ffw_norm.weight", (m.n_embd,), False)
        add(f"blk.{il}.ffn_norm.weight", (m.n_embd,), False)
        add(f"blk.{il}.ffn_gate.weight", (m.n_embd, m.n_ff), True)
        add(f"blk.{il}.ffn_up.weight", (m.n_embd, m.n_ff), True)
        add(f"blk.{il}.ffn_down.weight", (m.n_ff, m.n_embd), True)
    add("output_norm.weight", (m.n_embd,), False)
    if m.arch != "gemma2":
        add("output.weight", (m.n_embd, m.n_vocab), True)
    return out


def tiny_llamacpp_model(m: TinyModel):
    """The LlamaCppModel the planner reads from the file `write_tiny_gguf(m)` writes, built without
    writing it: gguf-py packs tensors in order, each padded to 32 bytes (tests check it is the same)."""
    from vramplan.serve.llamacpp_model import LlamaCppModel, WeightTensor, swa_pattern, tensor_layer
    from vramplan.serve.llamacpp_types import tensor_bytes

    tensors, offset = [], 0
    for name, shape, quantized in tiny_tensors(m):
        ggml_type = m.weight_type if quantized else "f32"
        nbytes = tensor_bytes(ggml_type, shape)
        tensors.append(WeightTensor(name, ggml_type, shape, tensor_layer(name), nbytes, offset))
        offset += -(-nbytes // 32) * 32
    head_dim, swa = m.n_embd // m.n_head, m.arch == "gemma2"
    return LlamaCppModel(
        name=m.name, architecture=m.arch, n_layer=m.n_layer, n_embd=m.n_embd, n_head=(m.n_head,) * m.n_layer,
        n_head_kv=(m.n_head_kv,) * m.n_layer, head_dim_k=head_dim, head_dim_v=head_dim, n_vocab=m.n_vocab,
        n_ctx_train=m.n_ctx_train, n_swa=m.n_swa if swa else 0,
        swa_layers=swa_pattern(m.n_layer, 2) if swa else (False,) * m.n_layer, tensors=tuple(tensors),
        tied_output=swa, source=f"tiny model {m.name}")


def _vocab(writer, n_vocab: int) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581t{i}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (n_vocab - 259)  # UNKNOWN, CONTROL, BYTE, NORMAL (llama-vocab.h)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)


def write_tiny_gguf(path: Path, m: TinyModel, seed: int = 0) -> Path:
    """Write `m` to `path` and return the path."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    qtype = gguf.GGMLQuantizationType[m.weight_type.upper()]
    head_dim = m.n_embd // m.n_head
    writer = gguf.GGUFWriter(str(path), m.arch)
    writer.add_name(m.name)
    writer.add_context_length(m.n_ctx_train)
    writer.add_embedding_length(m.n_embd)
    writer.add_block_count(m.n_layer)
    writer.add_feed_forward_length(m.n_ff)
    writer.add_head_count(m.n_head)
    writer.add_head_count_kv(m.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(1 if m.weight_type == "f16" else 7 if m.weight_type == "q8_0" else 2 if m.weight_type == "q4_0" else 0)
    if m.arch == "gemma2":
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(m.n_swa)
        writer.add_attn_logit_softcapping(50.0)
        writer.add_final_logit_softcapping(30.0)
    _vocab(writer, m.n_vocab)

    for name, shape, quantized in tiny_tensors(m):
        data = (rng.standard_normal(shape[::-1]) * 0.02).astype(np.float32)  # numpy order is ggml's reversed
        if not quantized or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
