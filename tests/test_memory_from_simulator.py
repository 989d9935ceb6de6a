"""Analytic-model terms the trace simulator found missing (numbers from vramplan.simulate)."""
from vramplan.catalog import get_model
from vramplan.estimate import make_run
from vramplan.gpus import get_gpu
from vramplan.memory import logits
from vramplan.memory.dtypes import resolve_dtypes
from vramplan.memory.plan import phase_components

GiB = 2**30


def _phases(model, **fields):
    gpu = get_gpu("h100")
    run = make_run(**fields)
    return phase_components(get_model(model), gpu, run), resolve_dtypes(run, gpu, get_model(model)), run


def test_full_finetuning_loss_backward_holds_the_head_weight_gradient_in_two_dtypes():
    phases, dtypes, run = _phases("gemma-2-2b", method="full", seq_len=256)
    model = get_model("gemma-2-2b")
    assert logits.head_weight_gradient_bytes(model, dtypes) == (2 + 4) * 256000 * 2304
    # simulated (transformers 5.24, fake tensors): 32.609 GiB
    assert abs(sum(phases["loss_backward"].values()) / GiB - 32.609) < 0.01


def test_tied_embeddings_full_finetuning_counts_both_partial_gradients_at_backward_end():
    phases, dtypes, run = _phases("gemma-2-2b", method="full", seq_len=256)
    extra = logits.tied_embedding_gradient_bytes(get_model("gemma-2-2b"), run, dtypes)
    assert extra == 2 * 256000 * 2304 * 4
    # simulated peak of the layer backward + backward end: 43.383 GiB (was 39.20 analytic)
    assert abs(sum(phases["backward_end"].values()) / GiB - 43.383) / 43.383 < 0.01


def test_untied_or_lora_runs_get_no_tied_gradient_term():
    for model, method in (("llama-3.1-8b", "full"), ("gemma-2-2b", "qlora")):
        _, dtypes, run = _phases(model, method=method)
        assert logits.tied_embedding_gradient_bytes(get_model(model), run, dtypes) == 0
