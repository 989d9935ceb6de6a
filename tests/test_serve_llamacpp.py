"""llama.cpp serving plans: -ngl placement, KV cells, solvers that return the largest that fits, advice that fits."""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vramplan.catalog import get_model
from vramplan.errors import InputError
from vramplan.gpus import get_gpu, parse_size
from vramplan.memory.weights import GGUF_BLOCKS
from vramplan.serve import llamacpp
from vramplan.serve import llamacpp_rules as rules
from vramplan.serve.llamacpp_model import INPUT, OUTPUT, model_from_catalog
from vramplan.serve.llamacpp_types import GGML_TYPES, TYPE_IDS

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def _args(*flags, host_ram="64GiB", fmt="gguf-q4_k_m"):
    parser = argparse.ArgumentParser()
    llamacpp.add_arguments(parser)
    args = parser.parse_args(list(flags))
    args.host_ram_bytes, args.format = (parse_size(host_ram) if host_ram else None), fmt
    return args


@pytest.fixture(scope="module")
def llama70b():
    return get_model("llama-3.1-70b")


def test_ggml_table_agrees_with_the_catalog_gguf_blocks():
    for name, (elements, nbytes) in GGUF_BLOCKS.items():
        assert GGML_TYPES[TYPE_IDS[name]][1:] == (elements, nbytes)


@pytest.mark.parametrize("ngl, on_gpu", [
    (0, set()), (1, {OUTPUT}), (3, {OUTPUT, 9, 8}), (10, {OUTPUT, *range(1, 10)}),
    (11, {OUTPUT, *range(10)}), (-1, {OUTPUT, *range(10)}), (99, {OUTPUT, *range(10)}),
])
def test_ngl_offloads_the_output_layer_first_then_repeating_layers_from_the_end(ngl, on_gpu):
    layers = [INPUT, OUTPUT, *range(10)]
    assert {il for il in layers if rules.layer_on_gpu(il, 10, ngl)} == on_gpu


@pytest.mark.parametrize("n_ctx, n_parallel, unified, cells, streams", [
    (1000, 1, False, 1024, 1), (4096, 4, False, 1024, 4), (3000, 3, False, 1024, 3), (3000, 3, True, 3072, 1),
    (5000, 3, False, 1792, 3),
])
def test_kv_cells_follow_llama_context_padding(n_ctx, n_parallel, unified, cells, streams):
    assert rules.kv_cells(n_ctx, n_parallel, unified) == (cells, streams)


def test_cuda_pads_quantized_rows_to_512_elements_and_128_bytes():
    assert rules.cuda_alloc_bytes("q4_0", (4096, 10), 4096 // 32 * 18 * 10) == 4096 // 32 * 18 * 10
    # 96-element q8_0 rows: + row_size(q8_0, 416) = 13 blocks x 34 B, then 128-aligned: 1020 + 442 -> 1536
    assert rules.cuda_alloc_bytes("q8_0", (96, 10), 10 * 3 * 34) == 1536
    assert rules.cuda_alloc_bytes("f16", (100, 3), 600) == 640  # unquantized: only the 128 B alignment


def test_every_weight_is_on_one_side_and_gpu_bytes_grow_with_ngl(llama70b):
    model = model_from_catalog(llama70b, "gguf-q4_k_m")
    cpu_only = rules.weight_buffers(model, 0, use_mmap=False)
    assert cpu_only["gpu"] == 0 and cpu_only["host"] == sum(rules.pad(t.nbytes, 32) for t in model.tensors)
    previous = 0
    for ngl in range(0, model.n_layer + 2, 7):
        split = rules.weight_buffers(model, ngl, use_mmap=True)
        assert split["gpu"] >= previous
        previous = split["gpu"]
    assert rules.weight_buffers(model, -1, True)["host"] == model.token_embd.nbytes


def test_catalog_tensors_use_the_weights_module_quant_mix(llama70b):
    model = model_from_catalog(llama70b, "gguf-q4_k_m")
    types = {t.name: t.ggml_type for t in model.tensors}
    assert types["output.weight"] == "q6_k" and types["blk.40.attn_q.weight"] == "q4_k"
    assert types["blk.0.attn_v.weight"] == "q6_k" and types["blk.0.norm_0.weight"] == "f32"
    assert len(model.tensors) == 2 + 1 + model.n_layer * 9


def test_showcase_plan_answers_with_the_largest_ngl(llama70b):
    gpu = get_gpu("4090")
    plan = llamacpp.plan_from_args(llama70b, gpu, _args("--ctx-size", "8192"))
    assert plan.fits and plan.placement.n_gpu_layers == plan.max_gpu_layers
    s = plan.settings
    over = llamacpp.place(model_from_catalog(llama70b, "gguf-q4_k_m"), gpu.cuda_context_bytes, s,
                          plan.max_gpu_layers + 1, 8192)
    assert plan.placement.gpu_bytes <= gpu.total_memory_bytes < over.gpu_bytes
    text, data = plan.render_text(), plan.to_json()
    assert f"-ngl {plan.max_gpu_layers} of 81" in text and data["fits"] is True
    assert data["placement"]["gpu_bytes"] == plan.placement.gpu_bytes


def test_max_context_is_the_largest_that_fits(llama70b):
    gpu = get_gpu("4090")
    plan = llamacpp.plan_from_args(llama70b, gpu, _args("-ngl", "30", "--ctx-size", "8192", host_ram="48GiB"))
    model = model_from_catalog(llama70b, "gguf-q4_k_m")
    best = plan.max_ctx_size
    assert best > 0

    def fits(ctx):
        p = llamacpp.place(model, gpu.cuda_context_bytes, plan.settings, 30, ctx)
        return p.gpu_bytes <= gpu.total_memory_bytes and p.host_bytes <= parse_size("48GiB")

    assert fits(best) and not fits(best + 256)


def test_advice_lines_fit_when_applied(llama70b):
    gpu = get_gpu("4090")
    plan = llamacpp.plan_from_args(llama70b, gpu, _args("-ngl", "40", host_ram="32GiB"))  # 128k context
    assert not plan.fits and plan.advice
    assert any("--ctx-size" in line for line in plan.advice)
    for line in plan.advice:
        if line.startswith("--cache-type-k"):
            kv = line.split()[1]
            fixed = llamacpp.plan_from_args(llama70b, gpu, _args("-ngl", "40", "-ctk", kv, "-ctv", kv, host_ram="32GiB"))
            assert fixed.fits


def test_quantized_v_cache_needs_flash_attention(llama70b):
    with pytest.raises(InputError, match="flash attention"):
        llamacpp.plan_from_args(llama70b, get_gpu("4090"), _args("-ctv", "q8_0", "-fa", "off"))


@pytest.mark.parametrize("text", ["x", "-3", "1e9", "12345678"])
def test_bad_ngl_is_refused(llama70b, text):
    with pytest.raises(InputError, match="n-gpu-layers"):
        llamacpp.plan_from_args(llama70b, get_gpu("4090"), _args("-ngl", text))


def test_all_layers_and_no_host_ram_given(llama70b):
    plan = llamacpp.plan_from_args(get_model("llama-3.1-8b"), get_gpu("4090"), _args("-ngl", "all", "-c", "4096", host_ram=None))
    assert plan.placement.n_gpu_layers == 33 and plan.fits_host and "not checked" in plan.render_text()


def test_non_gguf_format_is_refused(llama70b):
    with pytest.raises(InputError, match="format"):
        llamacpp.plan_from_args(llama70b, get_gpu("4090"), _args(fmt="awq-4bit"))


def test_gguf_file_plans_like_its_layout(tmp_path):
    pytest.importorskip("gguf")
    from llamacpp_tiny_gguf import TinyModel, tiny_llamacpp_model, write_tiny_gguf

    for arch, weight_type in (("llama", "q8_0"), ("gemma2", "f16")):
        tiny = TinyModel(arch=arch, weight_type=weight_type)
        path = write_tiny_gguf(tmp_path / f"{arch}.gguf", tiny)
        from_file = llamacpp.plan_from_args(str(path), get_gpu("4GiB"), _args("-c", "1024", fmt=None))
        from_layout = llamacpp.plan(tiny_llamacpp_model(tiny), get_gpu("4GiB"), from_file.settings, parse_size("64GiB"))
        assert from_file.placement == replace(from_layout.placement)


def test_engine_module_imports_nothing_heavy():
    code = ("import sys; import vramplan.serve.llamacpp; "
            "print(sorted(m for m in ('numpy', 'torch', 'gguf', 'llama_cpp', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_serve_command_plans_the_catalog_model_with_host_ram(capsys):
    import json

    from vramplan.cli.main import main

    code = main(["serve", "--engine", "llama.cpp", "--model", "llama-3.1-70b", "--format", "gguf-q4_k_m",
                 "--gpu", "4090", "--host-ram", "64GiB", "--json"])
    data = json.loads(capsys.readouterr().out)
    expected = llamacpp.plan(get_model("llama-3.1-70b"), get_gpu("4090"), llamacpp.LlamaCppSettings(n_gpu_layers=None),
                             parse_size("64GiB"), "gguf-q4_k_m").to_json()
    assert code == 0 and data == expected


def test_serve_command_reads_a_gguf_file_header(tmp_path, capsys):
    pytest.importorskip("gguf")
    import json

    from llamacpp_tiny_gguf import TinyModel, write_tiny_gguf

    from vramplan.cli.main import main

    path = write_tiny_gguf(tmp_path / "tiny.gguf", TinyModel(arch="llama", weight_type="q8_0"))
    code = main(["serve", "--engine", "llama.cpp", "--model", str(path), "--gpu", "t4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["n_layer"] == 4 and data["fits_gpu"] is True


def test_serve_command_refuses_host_ram_for_vllm(capsys):
    from vramplan.cli.main import main

    assert main(["serve", "--engine", "vllm", "--model", "7b", "--gpu", "l4", "--host-ram", "64GiB"]) == 2
    assert "--host-ram" in capsys.readouterr().err
