"""`fit --emit hf` snippets run: each variant is executed on CPU against a tiny real checkpoint
(configs built, model loaded, peft wraps, one Trainer step) with no transformers deprecation
warning, and loads the checkpoint and attention the plan was made for."""
from __future__ import annotations

import warnings

import pytest

from vramplan.catalog import get_model
from vramplan.emit_hf import LOAD_MARKER, hf_snippet
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.resolve import resolve_model

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

pytestmark = pytest.mark.slow

# peft 0.21 reads this deprecated property inside get_peft_model (peft_model.py, PeftModel.__init__)
# whatever the snippet passes: not about an emitted argument, and nothing the snippet can avoid
NOT_FROM_THE_SNIPPET = ("`is_gradient_checkpointing` is deprecated",)
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, vocab_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    """A tiny Llama and a tiny Gemma-2 saved with save_pretrained (config.json + safetensors)."""
    torch.manual_seed(0)
    folders = {}
    for name, config in [("llama", transformers.LlamaConfig(**TINY)),
                         ("gemma2", transformers.Gemma2Config(**TINY, sliding_window=16))]:
        folder = tmp_path_factory.mktemp(f"tiny-{name}")
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        folders[name] = folder
    return folders


def snippet_for(model, **fields):
    gpu, run = get_gpu("a100"), make_run(seq_len=16, **fields)
    return hf_snippet(model, gpu, run, plan(model, gpu, run))


def execute(snippet: str, checkpoint=None, emitted_id=None):
    """Run `snippet` (model id `emitted_id` rewritten to the local `checkpoint`), then one Trainer
    step on two samples; returns the namespace and the deprecation warnings raised."""
    if emitted_id is not None:
        assert f'"{emitted_id}"' in snippet
        snippet = snippet.replace(f'"{emitted_id}"', f'"{checkpoint}"')
    snippet = snippet.replace('report_to="none",', 'report_to="none", use_cpu=True, max_steps=1, '
                              'save_strategy="no", logging_strategy="no", disable_tqdm=True,')
    namespace = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(snippet, "<emit-hf>", "exec"), namespace)
        if "training_args" in namespace:
            ids = torch.randint(0, TINY["vocab_size"], (2, 16))
            samples = [{"input_ids": row, "attention_mask": torch.ones_like(row), "labels": row} for row in ids]
            trainer = transformers.Trainer(model=namespace["model"], args=namespace["training_args"],
                                           train_dataset=samples)
            namespace["train_output"] = trainer.train()
        else:
            prompt = torch.randint(0, TINY["vocab_size"], (1, 8))
            namespace["generated"] = namespace["model"].generate(
                prompt, do_sample=False, **{**namespace["generate_kwargs"], "max_new_tokens": 2})
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
                    and "transformers" in (w.filename + str(w.message))
                    and not str(w.message).startswith(NOT_FROM_THE_SNIPPET)]
    return namespace, deprecations


@pytest.mark.parametrize("fields", [
    dict(method="qlora"),
    dict(method="qlora", gradient_checkpointing=False),
    dict(method="lora"),
    dict(method="lora", gradient_checkpointing=False, lora_targets=("q_proj", "v_proj")),
    dict(method="full", optimizer="adamw"),
    dict(method="full", optimizer="sgd_momentum", gradient_checkpointing=False),
], ids=["qlora", "qlora-no-ckpt", "lora", "lora-no-ckpt", "full", "full-sgd-no-ckpt"])
def test_emitted_training_snippet_loads_the_local_folder_and_trains_a_step_without_deprecations(
        tiny_folders, fields):
    if fields["method"] == "qlora":
        pytest.importorskip("bitsandbytes")
    model = resolve_model(str(tiny_folders["llama"]))
    snippet = snippet_for(model, **fields)
    # the folder's path, not its bare name (which from_pretrained would look up on the Hub)
    assert f'"{tiny_folders["llama"].resolve()}"' in snippet
    assert "    gradient_checkpointing" not in snippet and "gradient_checkpointing_kwargs" not in snippet
    assert "# written for transformers 5.24" in snippet
    namespace, deprecations = execute(snippet)
    assert deprecations == []
    args = namespace["training_args"]
    assert args.activation_checkpointing is fields.get("gradient_checkpointing", True)
    assert namespace["train_output"].global_step == 1
    if fields["method"] == "qlora":
        assert type(namespace["bnb_config"]).__name__ == "BitsAndBytesConfig"
        assert namespace["model"].base_model.model.model.layers[0].self_attn.q_proj.base_layer.__class__.__name__ \
            == "Linear4bit"
    if fields["method"] != "full":
        assert namespace["model"].__class__.__name__.startswith("PeftModel")


def test_emitted_inference_snippet_loads_and_generates(tiny_folders):
    model = resolve_model(str(tiny_folders["llama"]))
    snippet = snippet_for(model, method="inference")
    namespace, deprecations = execute(snippet)
    assert deprecations == [] and namespace["generated"].shape == (1, 10)


def test_emitted_gemma2_snippet_uses_the_eager_attention_it_was_planned_with(tiny_folders):
    model = resolve_model(str(tiny_folders["gemma2"]))
    snippet = snippet_for(model, method="lora", attention="sdpa")
    assert 'attn_implementation="eager"' in snippet and 'attn_implementation="sdpa"' not in snippet
    namespace, deprecations = execute(snippet)
    assert deprecations == [] and namespace["train_output"].global_step == 1
    assert namespace["model"].config._attn_implementation == "eager"


def test_emitted_instruct_snippet_loads_the_instruct_repository(tiny_folders):
    model = get_model("llama-3.1-8b-instruct")
    snippet = snippet_for(model, method="lora")
    assert model.hf_id == "meta-llama/Llama-3.1-8B-Instruct"
    assert f'"{model.hf_id}"' in snippet and '"meta-llama/Llama-3.1-8B"' not in snippet
    namespace, deprecations = execute(snippet, tiny_folders["llama"], model.hf_id)
    assert deprecations == [] and namespace["train_output"].global_step == 1


def test_emitted_chunked_loss_says_liger_kernel_is_needed_and_what_happens_without_it(tiny_folders):
    model = resolve_model(str(tiny_folders["llama"]))
    snippet = snippet_for(model, method="lora", loss_impl="chunked")
    comment = snippet.split("use_liger_kernel=True")[0].rsplit("fp16=", 1)[1]
    assert "pip install liger-kernel" in comment and "ImportError" in comment
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        # what the comment promises without it: Trainer(...) refuses, naming the package
        with pytest.raises(ImportError, match="liger-kernel"):
            execute(snippet)
    else:
        pytest.skip("liger-kernel is installed: its Triton kernels need a GPU, not run here")


def gptq_folder(tmp_path, bits=4):
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,'
        ' "num_attention_heads": 32, "vocab_size": 32000,'
        f' "quantization_config": {{"quant_method": "gptq", "bits": {bits}, "group_size": 128}}}}')
    return tmp_path


def test_emitted_gptq_plan_loads_the_gptq_checkpoint_without_a_bnb_config(tmp_path):
    model = resolve_model(str(gptq_folder(tmp_path)))
    for method in ("qlora", "inference"):
        snippet = snippet_for(model, method=method)
        assert "BitsAndBytesConfig" not in snippet and "bnb_config" not in snippet
        assert f'"{tmp_path.resolve()}"' in snippet
        assert "pre-quantized" in snippet and "load a GPTQ" not in snippet
        compile(snippet, "<emit-hf>", "exec")


def test_emitted_gptq_format_on_a_float_repo_says_what_to_load(tmp_path):
    model = get_model("llama-3.1-8b-instruct")
    snippet = snippet_for(model, method="qlora", weight_format="gptq-4bit")
    assert "BitsAndBytesConfig" not in snippet and "bnb_config" not in snippet
    assert '"meta-llama/Llama-3.1-8B-Instruct"' in snippet
    assert "stores float weights" in snippet and "load a GPTQ 4-bit quantization" in snippet
    # and the other way round: a GPTQ folder planned as bitsandbytes nf4 cannot be re-quantized by bnb
    local = resolve_model(str(gptq_folder(tmp_path)))
    snippet = snippet_for(local, method="qlora", weight_format="nf4")
    assert "stores gptq-4bit weights" in snippet and "float (unquantized) checkpoint" in snippet
    assert "quantization_config=bnb_config" not in snippet
    compile(snippet, "<emit-hf>", "exec")


def test_emitted_hf_cache_model_loads_its_repo_id(tmp_path, monkeypatch):
    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "abc1234"
    snapshot.mkdir(parents=True)
    gptq_folder(snapshot)
    (tmp_path / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "models--org--tiny" / "refs" / "main").write_text("abc1234")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    model = resolve_model("org/tiny")
    assert model.checkpoint_path == "" and LOAD_MARKER in snippet_for(model)
    assert '"org/tiny"' in snippet_for(model)
