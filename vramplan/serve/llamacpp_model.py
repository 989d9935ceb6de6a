"""What llama.cpp needs to know about a model: its hyperparameters and each weight tensor's ggml type,
shape, GGUF offset, and which layer it belongs to.

Two ways in: a real `.gguf` file (its header, read bounded by `sources.gguf_header`), or a catalog
model with `--format gguf-*`, whose tensors are laid out as convert_hf_to_gguf.py names them and typed
per tensor by llama.cpp's quantization mix (`memory.weights.gguf_tensor_type`).

Layer of a tensor (llama-arch.cpp `LLM_TENSOR_INFOS`): `token_embd*` is the input layer, `output*`
the output layer, `blk.<i>.*` repeating layer i. `rope_freqs` is a repeating-layer tensor that
llama.cpp creates for layer 0 and duplicates into every other device's buffer.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from vramplan.errors import InputError
from vramplan.memory.weights import gguf_tensor_type
from vramplan.serve.llamacpp_types import TYPE_IDS, tensor_bytes, type_name
from vramplan.sources.gguf_header import GGUFHeader, SkippedArray, read_gguf_header
from vramplan.specs.model import ModelSpec

INPUT, OUTPUT = -1, -2  # layer index of the input (token_embd) and output (output, output_norm) tensors
# llama.cpp architectures with interleaved sliding-window attention, and their default pattern
# (src/models/gemma2.cpp load_swa_pattern(ml, 2), gemma3.cpp load_swa_pattern(ml, 6)).
SWA_PATTERN = {"gemma2": 2, "gemma3": 6}
GGUF_ARCH = {"llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2", "qwen3": "qwen3",
             "gemma2": "gemma2", "gemma3": "gemma3", "phi3": "phi3"}  # convert_hf_to_gguf.py model_arch


@dataclass(frozen=True)
class WeightTensor:
    name: str
    ggml_type: str
    shape: tuple[int, ...]
    layer: int  # INPUT, OUTPUT, or the repeating layer index
    nbytes: int
    offset: int  # from the start of the GGUF data section


@dataclass(frozen=True)
class LlamaCppModel:
    name: str
    architecture: str  # llama.cpp's general.architecture
    n_layer: int
    n_embd: int
    n_head: tuple[int, ...]  # per layer
    n_head_kv: tuple[int, ...]  # per layer
    head_dim_k: int
    head_dim_v: int
    n_vocab: int
    n_ctx_train: int
    n_swa: int  # sliding window in tokens, 0 = none
    swa_layers: tuple[bool, ...]
    tensors: tuple[WeightTensor, ...]
    alignment: int = 32
    tied_output: bool = False  # no output.weight: llama.cpp duplicates token_embd as the output matrix
    source: str = ""

    def kv_width(self, layer: int) -> tuple[int, int]:
        """(n_embd_k_gqa, n_embd_v_gqa) of a layer: head_dim x n_head_kv (llama-hparams.cpp)."""
        return self.head_dim_k * self.n_head_kv[layer], self.head_dim_v * self.n_head_kv[layer]

    @property
    def token_embd(self) -> WeightTensor:
        return next(t for t in self.tensors if t.name == "token_embd.weight")

    @cached_property
    def tensors_by_layer(self) -> dict[int, tuple[WeightTensor, ...]]:
        """Tensors grouped by layer (INPUT, OUTPUT, 0..n_layer-1); the solvers place one model many times."""
        groups: dict[int, list[WeightTensor]] = {}
        for tensor in self.tensors:
            groups.setdefault(tensor.layer, []).append(tensor)
        return {layer: tuple(group) for layer, group in groups.items()}

    @cached_property
    def n_ff(self) -> int:
        """Feed-forward width: ffn_up's output rows (ggml shape [n_embd, n_ff])."""
        return max((t.shape[1] for t in self.tensors if t.name.endswith("ffn_up.weight") and len(t.shape) > 1),
                   default=4 * self.n_embd)


def tensor_layer(name: str) -> int:
    if name.startswith("blk."):
        index = name.split(".")[1]
        if index.isdigit() and len(index) < 7:
            return int(index)
    if name.startswith("token_embd") or name.startswith("rope_freqs"):
        return INPUT if name.startswith("token_embd") else 0
    return OUTPUT


def _per_layer(value, n_layer: int, key: str, origin: str) -> tuple[int, ...]:
    if isinstance(value, list):
        if len(value) != n_layer or not all(isinstance(v, int) and 0 <= v <= 2**16 for v in value):
            raise InputError(origin, f"{key} must list {n_layer} head counts")
        return tuple(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**16:
        raise InputError(origin, f"{key} must be a head count (got {value!r})")
    return (value,) * n_layer


def _int_key(header: GGUFHeader, key: str, default=None, low: int = 1, high: int = 2**31) -> int:
    value = header.arch_value(key, default)
    if value is None:
        raise InputError(str(header.path), f"metadata {header.architecture}.{key} is missing")
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(str(header.path), f"{header.architecture}.{key} must be an integer {low} to {high} (got {value!r})")
    return value


def model_from_gguf(header: GGUFHeader) -> LlamaCppModel:
    """The LlamaCppModel of a GGUF file, from its metadata keys (llama-arch.cpp LLM_KV_NAMES) and tensor infos."""
    origin = str(header.path)
    arch = header.architecture
    if not arch:
        raise InputError(origin, "metadata general.architecture is missing")
    n_layer = _int_key(header, "block_count", high=4096)
    n_embd = _int_key(header, "embedding_length", high=2**20)
    n_head = _per_layer(header.arch_value("attention.head_count"), n_layer, "attention.head_count", origin)
    n_head_kv = _per_layer(header.arch_value("attention.head_count_kv", header.arch_value("attention.head_count")),
                           n_layer, "attention.head_count_kv", origin)
    default_head = n_embd // max(n_head[0], 1)
    head_k = _int_key(header, "attention.key_length", default_head, high=2**16)
    head_v = _int_key(header, "attention.value_length", head_k, high=2**16)
    tensors = []
    for info in header.tensors:
        ggml_type = type_name(info.ggml_type, origin)
        nbytes = tensor_bytes(ggml_type, info.shape, f"{origin}: {info.name}") if info.shape else 0
        if info.offset % header.alignment or header.data_offset + info.offset + nbytes > header.file_bytes:
            raise InputError(origin, f"tensor {info.name} lies outside the file or is misaligned")
        tensors.append(WeightTensor(info.name, ggml_type, info.shape, tensor_layer(info.name), nbytes, info.offset))
    names = {t.name for t in tensors}
    if "token_embd.weight" not in names:
        raise InputError(origin, "no token_embd.weight tensor: not a llama.cpp language model")
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    n_vocab = tokens.length if isinstance(tokens, SkippedArray) else len(tokens) if isinstance(tokens, list) else 0
    n_vocab = n_vocab or next(t.shape[1] for t in tensors if t.name == "token_embd.weight")
    n_swa, swa_layers = 0, (False,) * n_layer
    if arch in SWA_PATTERN:
        n_swa = _int_key(header, "attention.sliding_window", 4096 if arch == "gemma2" else 0, low=0)
        pattern = _int_key(header, "attention.sliding_window_pattern", SWA_PATTERN[arch], low=0, high=n_layer + 1)
        if n_swa:
            swa_layers = swa_pattern(n_layer, pattern)
    return LlamaCppModel(
        name=str(header.metadata.get("general.name", header.path.stem))[:200], architecture=arch, n_layer=n_layer,
        n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim_k=head_k, head_dim_v=head_v, n_vocab=n_vocab,
        n_ctx_train=_int_key(header, "context_length", 4096), n_swa=n_swa, swa_layers=swa_layers,
        tensors=tuple(tensors), alignment=header.alignment, tied_output="output.weight" not in names,
        source=f"GGUF header of {header.path.name} (v{header.version}, {len(tensors)} tensors)")


def swa_pattern(n_layer: int, pattern: int) -> tuple[bool, ...]:
    """llama_hparams::set_swa_pattern (dense_first=false): layer il is local iff il % n < n - 1; n = 0: all local."""
    return tuple(pattern == 0 or il % pattern < pattern - 1 for il in range(n_layer))


def _catalog_tensor_shapes(model: ModelSpec) -> list[tuple[str, tuple[int, ...], str, int]]:
    """(GGUF name, ggml shape [cols, rows...], role for the quant mix, layer) per tensor, in
    convert_hf_to_gguf.py's order: token_embd, blk.0 .. blk.N-1, output_norm, output."""
    h, layers = model.hidden_size, model.num_hidden_layers
    out = [("token_embd.weight", (h, model.vocab_size), "token_embd", INPUT)]
    names = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "qkv_proj": "attn_qkv", "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down",
             "gate_up_proj": "ffn_up", "gate": "ffn_gate_inp", "w1": "ffn_gate_exps", "w3": "ffn_up_exps",
             "w2": "ffn_down_exps"}
    roles = {"attn_v": "attn_v", "ffn_down": "ffn_down", "ffn_down_exps": "ffn_down"}
    for il in range(layers):
        for norm in range(model.norms_per_layer):
            out.append((f"blk.{il}.norm_{norm}.weight", (h,), "f32", il))
        for lin in model.layer_linears():
            name = names[lin.name]
            shape = (lin.in_features, lin.out_features) + ((lin.count,) if lin.count > 1 else ())
            out.append((f"blk.{il}.{name}.weight", shape, "f32" if name == "ffn_gate_inp" else roles.get(name, "other"), il))
            if lin.bias:
                out.append((f"blk.{il}.{name}.bias", (lin.out_features,), "f32", il))
        if model.qk_norm:
            out += [(f"blk.{il}.attn_q_norm.weight", (model.head_dim,), "f32", il),
                    (f"blk.{il}.attn_k_norm.weight", (model.head_dim,), "f32", il)]
    out.append(("output_norm.weight", (h,), "f32", OUTPUT))
    if not model.tie_word_embeddings:
        out.append(("output.weight", (h, model.vocab_size), "output", OUTPUT))
    return out


def model_from_catalog(model: ModelSpec, fmt: str) -> LlamaCppModel:
    """The LlamaCppModel of a catalog model quantized to `fmt` (gguf-q4_k_m, ...), tensors packed at
    32-byte alignment in convert_hf_to_gguf.py's order. The quant mix is `weights.gguf_tensor_type`
    (a simplification of llama-quant.cpp's llama_tensor_get_type); norms and the MoE router stay f32."""
    if not fmt.startswith("gguf-"):
        raise InputError("format", f"llama.cpp serves GGUF files: give --format gguf-q4_k_m, gguf-q8_0, ... (got {fmt})")
    tensors, offset, alignment = [], 0, 32
    for name, shape, role, layer in _catalog_tensor_shapes(model):
        try:
            ggml_type = "f32" if role == "f32" else gguf_tensor_type(fmt, role, max(layer, 0), model.num_hidden_layers)
        except KeyError:
            raise InputError("format", f"unknown GGUF format {fmt}") from None
        nbytes = tensor_bytes(ggml_type, shape, f"{model.name}: {name}")
        tensors.append(WeightTensor(name, ggml_type, shape, layer, nbytes, offset))
        offset += -(-nbytes // alignment) * alignment
    arch = GGUF_ARCH.get(model.architecture, model.architecture)
    n_swa = model.sliding_window if arch in SWA_PATTERN else 0  # llama.cpp's llama arch ignores Mistral's window
    layers = model.num_hidden_layers
    return LlamaCppModel(
        name=model.name, architecture=arch, n_layer=layers, n_embd=model.hidden_size,
        n_head=(model.num_attention_heads,) * layers, n_head_kv=(model.num_key_value_heads,) * layers,
        head_dim_k=model.head_dim, head_dim_v=model.head_dim, n_vocab=model.vocab_size,
        n_ctx_train=model.max_position_embeddings, n_swa=n_swa,
        swa_layers=swa_pattern(layers, model.sliding_window_pattern) if n_swa else (False,) * layers,
        tensors=tuple(tensors), alignment=alignment, tied_output=model.tie_word_embeddings,
        source=f"catalog shapes, {fmt} mix (memory/weights.py gguf_tensor_type)")


def is_gguf_path(text: str) -> bool:
    return str(text).lower().endswith(".gguf")


def load_llamacpp_model(model, fmt: str | None) -> LlamaCppModel:
    """`model` is a ModelSpec (with `fmt`), a LlamaCppModel, or a path to a .gguf file."""
    if isinstance(model, LlamaCppModel):
        return model
    if isinstance(model, (str, Path)):
        if not is_gguf_path(str(model)):
            raise InputError("model", f"a llama.cpp model file ends in .gguf (got {str(model)[:80]})")
        return model_from_gguf(read_gguf_header(Path(model).expanduser()))
    return model_from_catalog(model, fmt or "gguf-q4_k_m")


__all__ = ["LlamaCppModel", "WeightTensor", "INPUT", "OUTPUT", "model_from_gguf", "model_from_catalog",
           "load_llamacpp_model", "is_gguf_path", "swa_pattern", "TYPE_IDS"]
