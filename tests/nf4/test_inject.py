import pytest

torch = pytest.importorskip("torch", reason="the NF4 extra needs torch")
transformers = pytest.importorskip("transformers", reason="the inject test builds a tiny HF Llama")

from torch import nn  # noqa: E402

from vramplan.torch_nf4.inject import prepare_for_kbit_training, quantize_model_to_nf4_lora  # noqa: E402
from vramplan.torch_nf4.linear import NF4Linear  # noqa: E402

TARGETS = ("q_proj", "v_proj")


def _tiny_llama(dtype=torch.bfloat16):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config).to(dtype)


def test_linears_are_swapped_and_embeddings_and_lm_head_left_alone():
    model = _tiny_llama()
    embed, lm_head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    linear_names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"}
    quantize_model_to_nf4_lora(model, target_modules=TARGETS, rank=4, alpha=8)

    swapped = {n: m for n, m in model.named_modules() if isinstance(m, NF4Linear)}
    assert swapped.keys() == linear_names and len(swapped) == 2 * 7
    assert {n for n, m in swapped.items() if m.lora_rank} == {n for n in linear_names if n.endswith(TARGETS)}
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight is lm_head
    assert model.get_input_embeddings().weight is embed
    assert not any(isinstance(m, nn.Linear) and n != "lm_head" for n, m in model.named_modules() if "lora_" not in n)


def test_all_linear_targets_every_quantized_linear():
    model = quantize_model_to_nf4_lora(_tiny_llama(), target_modules="all-linear", rank=2)
    assert all(m.lora_rank == 2 for m in model.modules() if isinstance(m, NF4Linear))


def test_prepare_casts_float_weights_to_fp32_and_freezes_all_but_lora():
    model = quantize_model_to_nf4_lora(_tiny_llama(torch.bfloat16), target_modules=TARGETS, rank=4)
    prepare_for_kbit_training(model, use_gradient_checkpointing=False)
    for name, param in model.named_parameters():
        is_lora = ".lora_A." in name or ".lora_B." in name
        assert param.requires_grad == is_lora, name
        assert param.dtype in (torch.float32, torch.uint8), name
    assert model.lm_head.weight.dtype == model.model.norm.weight.dtype == torch.float32


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_a_training_step_updates_only_lora(gradient_checkpointing):
    model = quantize_model_to_nf4_lora(_tiny_llama(), target_modules=TARGETS, rank=4, compute_dtype=torch.bfloat16)
    prepare_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    ids = torch.randint(0, 256, (2, 12))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_A." in n or ".lora_B." in n for n in with_grad)
    assert len(with_grad) == 2 * len(TARGETS) * 2  # A and B, per target, per layer
    optimizer.step()
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n
    assert any(torch.count_nonzero(m.lora_B.weight) for m in model.modules() if isinstance(m, NF4Linear) and m.lora_rank)
