"""Model sources: HF config.json, safetensors headers (untrusted bytes), local folders and
the offline HF cache, and resolve_model's order (path, cache, catalog)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vramplan.catalog import get_model
from vramplan.errors import InputError
from vramplan.resolve import resolve_model
from vramplan.sources.config_json import spec_from_config, weight_format_from_config
from vramplan.sources.local import find_in_hf_cache, load_local
from vramplan.sources.safetensors_header import read_checkpoint, read_header

LLAMA_2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
    "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
}
SPEC_FIELDS = (
    "architecture", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "vocab_size", "tie_word_embeddings", "num_local_experts",
    "num_experts_per_tok", "attention_bias", "fused_qkv", "fused_gate_up", "norms_per_layer",
    "final_logit_softcapping", "max_position_embeddings", "qk_norm", "sliding_window", "sliding_window_pattern",
)


def same_architecture(a, b) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in SPEC_FIELDS)


def config_of(key: str) -> dict:
    """A config.json as transformers writes it, rebuilt from a catalog entry."""
    spec = get_model(key)
    model_type = {"gemma2": "gemma2", "phi3": "phi3", "qwen2": "qwen2", "mixtral": "mixtral",
                  "mistral": "mistral", "qwen3": "qwen3", "gemma3": "gemma3_text"}.get(spec.architecture, "llama")
    cfg = {f: getattr(spec, f) for f in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                         "num_attention_heads", "num_key_value_heads", "head_dim",
                                         "vocab_size", "tie_word_embeddings", "max_position_embeddings")}
    cfg["model_type"] = model_type
    if spec.is_moe:
        cfg.update(num_local_experts=spec.num_local_experts, num_experts_per_tok=spec.num_experts_per_tok)
    if model_type == "gemma2":
        cfg["final_logit_softcapping"] = 30.0
    if spec.sliding_window:
        cfg["sliding_window"] = spec.sliding_window
        if spec.sliding_window_pattern:
            cfg["sliding_window_pattern"] = spec.sliding_window_pattern
    return cfg


# ---------------------------------------------------------------- config.json

@pytest.mark.parametrize("key", ["llama-2-7b", "llama-3.2-1b", "mistral-7b-v0.3", "mixtral-8x7b",
                                 "qwen2.5-7b", "gemma-2-9b", "phi-3-mini-4k", "tinyllama-1.1b",
                                 "mistral-7b-v0.1", "qwen3-0.6b", "qwen3-32b", "gemma-3-1b", "gemma-3-27b",
                                 "phi-4", "mistral-nemo-12b"])
def test_config_json_gives_the_catalog_architecture(key):
    assert same_architecture(spec_from_config(config_of(key), name=key), get_model(key))


def test_config_json_fills_missing_head_dim_and_kv_heads():
    cfg = {k: v for k, v in LLAMA_2_7B.items() if k != "num_key_value_heads"}
    spec = spec_from_config(cfg)
    assert spec.num_key_value_heads == 32 and spec.head_dim == 128
    assert same_architecture(spec, get_model("llama-2-7b"))


def test_config_json_reads_nested_text_config():
    cfg = {"model_type": "llava", "text_config": dict(LLAMA_2_7B), "vision_config": {"hidden_size": 1024}}
    assert same_architecture(spec_from_config(cfg), get_model("llama-2-7b"))


def test_unknown_llama_like_model_type_is_read_as_llama_with_a_note():
    spec = spec_from_config({**LLAMA_2_7B, "model_type": "yi"})
    assert spec.architecture == "llama" and "read as llama" in spec.source


def test_config_json_missing_field_names_it():
    cfg = {k: v for k, v in LLAMA_2_7B.items() if k != "intermediate_size"}
    with pytest.raises(InputError, match="missing 'intermediate_size'") as info:
        spec_from_config({**cfg, "model_type": "bert"})
    assert info.value.field == "config.json"


def test_config_json_bad_value_is_an_input_error():
    with pytest.raises(InputError) as info:
        spec_from_config({**LLAMA_2_7B, "hidden_size": -5})
    assert "hidden_size" in info.value.field


@pytest.mark.parametrize(
    "quantization_config, expected",
    [({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "nf4"),
     ({"quant_method": "bitsandbytes", "load_in_4bit": True}, "fp4"),
     ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8"),
     ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq-4bit"),
     ({"quant_method": "awq", "bits": 4}, "awq-4bit"),
     ({"quant_method": "something-new"}, None),
     (None, None)],
)
def test_weight_format_from_quantization_config(quantization_config, expected):
    assert weight_format_from_config({**LLAMA_2_7B, "quantization_config": quantization_config}) == expected


# ---------------------------------------------------------------- safetensors, hand-built bytes

def safetensors_bytes(tensors: dict, metadata: dict | None = None, data: bytes | None = None) -> bytes:
    """A safetensors file: tensors maps name -> (dtype, shape, raw bytes)."""
    header, blob = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if metadata is not None:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + (blob if data is None else data)


def raw_header(header: dict, data_bytes: int) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * data_bytes


def test_hand_built_header_gives_names_shapes_and_exact_count(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(
        {"embed.weight": ("BF16", [10, 4], bytes(80)), "norm.weight": ("F32", [4], bytes(16))},
        metadata={"format": "pt"},
    ))
    header = read_header(path)
    assert header.metadata == {"format": "pt"}
    embed = header.tensors["embed.weight"]
    assert (embed.dtype, embed.shape, embed.numel, embed.nbytes) == ("BF16", (10, 4), 40, 80)
    checkpoint = read_checkpoint(path)
    assert checkpoint.parameter_count() == 44 and checkpoint.nbytes == 96
    assert checkpoint.bnb_4bit_format is None


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x05\x00\x00", "truncated"),
        (struct.pack("<Q", 500) + b"{}", "header length is larger than the file"),
        (struct.pack("<Q", 200_000_000) + b"{}", "100000000-byte bound"),
        (struct.pack("<Q", 4) + b"nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"[]", "must be a JSON object"),
        (raw_header({"w": {"dtype": "F32", "shape": [-2, 2], "data_offsets": [0, 16]}}, 16), "non-negative"),
        (raw_header({"w": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 16]}}, 16), "needs"),
        (raw_header({"w": {"dtype": "F32", "shape": [2, "2"], "data_offsets": [0, 16]}}, 16), "shape"),
        (raw_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, 8), "outside"),
        (raw_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [8, 4]}}, 16), "outside"),
        (raw_header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}, 16), "data_offsets"),
        (raw_header({"w": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 2]}}, 16), "unknown dtype"),
        (raw_header({"w": [1, 2]}, 0), "entry must be"),
        (raw_header({"__metadata__": [1]}, 0), "__metadata__"),
    ],
)
def test_malformed_safetensors_is_a_one_line_input_error(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(InputError) as info:
        read_header(path)
    assert message in str(info.value)
    assert info.value.field == str(path) and "\n" not in str(info.value)


def bnb_4bit_tensors(name: str, shape: list[int], quant_type: str = "nf4") -> dict:
    """The tensors bitsandbytes writes for one 4-bit weight with double quantization."""
    numel = shape[0] * shape[1]
    blocks = numel // 64
    state = json.dumps({"quant_type": quant_type, "blocksize": 64, "dtype": "bfloat16", "shape": shape,
                        "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.01}).encode()
    return {
        name: ("U8", [(numel + 1) // 2, 1], bytes((numel + 1) // 2)),
        f"{name}.absmax": ("U8", [blocks], bytes(blocks)),
        f"{name}.quant_map": ("F32", [16], bytes(64)),
        f"{name}.nested_absmax": ("F32", [1], bytes(4)),
        f"{name}.nested_quant_map": ("F32", [256], bytes(1024)),
        f"{name}.quant_state.bitsandbytes__{quant_type}": ("U8", [len(state)], state),
    }


def test_bnb_4bit_checkpoint_counts_logical_parameters(tmp_path):
    tensors = {
        **bnb_4bit_tensors("layers.0.q_proj.weight", [128, 64]),
        "embed.weight": ("BF16", [32, 64], bytes(32 * 64 * 2)),
    }
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(tensors))
    checkpoint = read_checkpoint(path)
    assert checkpoint.bnb_4bit_format == "nf4"
    assert checkpoint.parameter_count() == 128 * 64 + 32 * 64


def test_bnb_quant_state_that_disagrees_with_packed_size_is_rejected(tmp_path):
    tensors = bnb_4bit_tensors("w", [128, 64])
    tensors["w"] = ("U8", [100, 1], bytes(100))
    path = tmp_path / "model.safetensors"
    path.write_bytes(safetensors_bytes(tensors))
    with pytest.raises(InputError, match="does not match"):
        read_checkpoint(path).parameter_count()


def test_sharded_checkpoint_reads_every_shard_once(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(
        safetensors_bytes({"a": ("F16", [3, 4], bytes(24)), "b": ("F16", [4], bytes(8))}))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(
        safetensors_bytes({"c": ("F32", [5], bytes(20))}))
    index = {"metadata": {"total_size": 52}, "weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
        "c": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    checkpoint = read_checkpoint(tmp_path)
    assert len(checkpoint.headers) == 2
    assert checkpoint.parameter_count() == 12 + 4 + 5


@pytest.mark.parametrize("shard", ["../evil.safetensors", "/etc/passwd", "missing.safetensors"])
def test_index_with_bad_shard_names_is_rejected(tmp_path, shard):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": shard}}))
    with pytest.raises(InputError, match="weight_map"):
        read_checkpoint(tmp_path)


def test_real_safetensors_file_written_by_the_library(tmp_path):
    numpy_api = pytest.importorskip("safetensors.numpy", reason="safetensors not installed")
    import numpy as np

    path = tmp_path / "model.safetensors"
    numpy_api.save_file({"x": np.zeros((5, 6), dtype=np.float16), "y": np.zeros(2, dtype=np.int64)}, str(path))
    header = read_header(path)
    assert header.tensors["x"].nbytes == 60 and header.tensors["y"].dtype == "I64"
    assert read_checkpoint(path).parameter_count() == 32


# ---------------------------------------------------------------- local folders and the HF cache

def make_model_folder(folder: Path, cfg: dict, safetensors: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    if safetensors is not None:
        (folder / "model.safetensors").write_bytes(safetensors)
    return folder


def test_local_folder_with_config_and_bnb_checkpoint(tmp_path):
    folder = make_model_folder(tmp_path / "my-model", LLAMA_2_7B,
                               safetensors_bytes(bnb_4bit_tensors("w", [64, 64])))
    local = load_local(folder)
    assert same_architecture(local.spec, get_model("llama-2-7b"))
    assert local.weight_format == "nf4" and local.parameter_count == 64 * 64


def test_resolve_model_takes_a_config_json_path(tmp_path):
    folder = make_model_folder(tmp_path / "m", config_of("qwen2.5-0.5b"))
    assert same_architecture(resolve_model(str(folder / "config.json")), get_model("qwen2.5-0.5b"))


def test_bad_config_json_file_is_an_input_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        resolve_model(str(path))


def test_missing_path_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        resolve_model(str(tmp_path / "nowhere" / "config.json"))


def make_hf_cache(cache: Path, repo_id: str, cfg: dict, commit: str = "a" * 40) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    make_model_folder(repo / "snapshots" / commit, cfg)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_hf_cache_repo_id_is_found_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = {**LLAMA_2_7B, "num_hidden_layers": 3}  # differs from the catalog, so the cache won
    snapshot = make_hf_cache(tmp_path / "hub", "someone/tiny-llama-test", cfg)
    assert find_in_hf_cache("someone/tiny-llama-test") == snapshot
    spec = resolve_model("someone/tiny-llama-test")
    assert spec.num_hidden_layers == 3 and spec.name == "someone/tiny-llama-test"


def test_hf_home_is_used_when_hub_cache_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    make_hf_cache(tmp_path / "hub", "meta-llama/Llama-2-7b-hf", {**LLAMA_2_7B, "num_hidden_layers": 5})
    assert resolve_model("meta-llama/Llama-2-7b-hf").num_hidden_layers == 5


def test_repo_id_not_in_cache_falls_back_to_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert resolve_model("meta-llama/Llama-2-7b-hf").name == "llama-2-7b"
    assert resolve_model("7b").name == "llama-2-7b"
    with pytest.raises(InputError, match="did you mean"):
        resolve_model("someone/llama-2-7bb")


# ---------------------------------------------------------------- architectures the planner does not know

def test_unknown_model_type_gets_a_note_saying_what_was_assumed():
    from vramplan.estimate import estimate

    spec = spec_from_config({**LLAMA_2_7B, "model_type": "yi"})
    assert any("'yi' is not modelled: planned as llama-shaped" in note for note in spec.notes)
    assert any("'yi' is not modelled" in note for note in estimate(spec, "a100").notes)


@pytest.mark.parametrize("fields, expected", [
    ({"model_type": "deepseek_v2", "kv_lora_rank": 512, "q_lora_rank": None}, "latent attention (MLA"),
    ({"model_type": "starcoder3", "sliding_window": 4096}, "sliding_window 4096 is not modelled"),
    ({"model_type": "llama", "head_dim": 96}, "head_dim 96 is not hidden_size / num_attention_heads"),
    ({"model_type": "olmo3", "qk_layernorm": True}, "q/k normalization is not modelled"),
    ({"model_type": "qwen2_moe", "num_experts": 60, "moe_intermediate_size": 1408}, "mixture-of-experts"),
    ({"model_type": "llama", "rope_scaling": {"rope_type": "mrope2"}}, "rope_type 'mrope2' is not known"),
    ({"model_type": "cohere3", "attn_logit_softcapping": 50.0}, "attn_logit_softcapping is modelled for Gemma-2"),
    ({"model_type": "llama4_text", "attention_chunk_size": 8192}, "chunked attention"),
    ({"model_type": "qwen2", "sliding_window": 32768, "use_sliding_window": True}, "sliding_window 32768"),
])
def test_unmodelled_config_fields_get_a_note(fields, expected):
    spec = spec_from_config({**LLAMA_2_7B, **fields})
    assert any(expected in note for note in spec.notes), spec.notes


def test_a_fully_modelled_config_gets_no_assumption_note():
    assert spec_from_config(LLAMA_2_7B).notes == ()
    assert spec_from_config(config_of("qwen2.5-7b")).notes == ()


QWEN3_8B = {  # Qwen/Qwen3-8B config.json (fields the planner reads)
    "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": False, "max_position_embeddings": 40960, "attention_bias": False,
    "sliding_window": None, "use_sliding_window": False,
}
GEMMA3_4B = {  # google/gemma-3-4b-pt config.json: multimodal, the decoder under text_config
    "model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
    "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                    "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4,
                    "head_dim": 256, "vocab_size": 262208, "sliding_window": 1024,
                    "sliding_window_pattern": 6, "final_logit_softcapping": None,
                    "max_position_embeddings": 131072},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152},
}


def test_qwen3_config_reads_qk_norms_and_head_dim():
    spec = spec_from_config(QWEN3_8B)
    assert same_architecture(spec, get_model("qwen3-8b")) and spec.qk_norm and spec.notes == ()


def test_gemma3_multimodal_config_plans_the_text_decoder_and_says_so():
    spec = spec_from_config(GEMMA3_4B)
    catalog = get_model("gemma-3-4b")
    assert same_architecture(spec, catalog)
    assert (spec.qk_norm, spec.sliding_window, spec.sliding_window_layers) == (True, 1024, 29)
    assert any("multimodal" in note and "text decoder" in note for note in spec.notes)


def test_gemma3_layer_types_set_the_local_global_pattern():
    text = {**GEMMA3_4B["text_config"], "layer_types": ["sliding_attention"] * 3 + ["full_attention"]}
    text.pop("sliding_window_pattern")
    assert spec_from_config(text).sliding_window_pattern == 4


def test_unknown_repo_id_says_how_to_plan_it_from_its_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(InputError, match="did you mean: .*llama-3.1-8b-instruct.*pass that path") as info:
        resolve_model("someone/Llama-3.1-8B-Instruct-abliterated")
    assert "\n" not in str(info.value)


def test_config_without_tie_word_embeddings_takes_transformers_default():
    """Qwen3Config defaults to untied, Gemma3TextConfig to tied (configuration_*.py, transformers 5.24)."""
    untied = {k: v for k, v in QWEN3_8B.items() if k != "tie_word_embeddings"}
    assert spec_from_config(untied).tie_word_embeddings is False
    assert spec_from_config(GEMMA3_4B).tie_word_embeddings is True


def test_gemma3_hub_config_that_omits_class_defaults_reads_as_the_catalog_decoder():
    """google/gemma-3-4b-it's config.json lists only what differs from Gemma3TextConfig's defaults
    (vocab 262208, 8 heads, 4 KV heads, head_dim 256, 131072 positions): those defaults apply."""
    sparse = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
                              "sliding_window": 1024, "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
              "vision_config": {"hidden_size": 1152}}
    assert same_architecture(spec_from_config(sparse), get_model("gemma-3-4b"))


def test_qwen3_config_without_head_dim_keeps_qwen3s_128():
    no_head_dim = {k: v for k, v in QWEN3_8B.items() if k != "head_dim"}
    assert spec_from_config({**no_head_dim, "hidden_size": 5120, "num_attention_heads": 64}).head_dim == 128
