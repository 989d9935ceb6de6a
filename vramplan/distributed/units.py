"""Parameters gathered whole while a rank computes: FSDP units and ZeRO-3 modules in flight.

Sizes per unit come from the single-GPU parameter groups of a 1- and a 2-layer copy of the
model: a decoder layer is the difference, the root (embeddings, lm_head, final norm) the rest.
Gathered parameters are in the wrapper's compute dtype (FSDP MixedPrecision / MixedPrecisionPolicy
param_dtype, DeepSpeed's 16-bit module); 4-bit codes stay packed (`bnb_4bit_quant_storage`) and
the quantization state is not gathered (shares.py: it is whole on every rank already).

FSDP1 (FULL_SHARD), per phase of the step (FSDP2 with decoder-layer units: `fsdp2_moment_terms`,
checked against torch's fully_shard on a fake process group):
- forward: the root unit (FSDP1 keeps the root gathered from forward to backward) plus the units
  in flight while a decoder layer computes, counted at the last layer beside the whole forward's
  activations (an upper bound: the moment before the loss holds fewer): the layer's unsharded
  flat parameter, and the next one with `forward_prefetch`; without `limit_all_gathers` every
  layer (the CPU may issue every all-gather ahead of compute; the rate limiter caps them at two,
  _limiter_utils.py).
- loss_backward: the root unit.
- layer_backward: the root, the layer in backward, the next one when backward prefetch is on
  (BACKWARD_PRE, when accelerate's fsdp_backward_prefetch sets it), and the layer's unsharded
  gradients of its trainable parameters in the compute dtype, before the reduce-scatter.
- backward_end: the root and its unsharded gradients (embedding, lm_head when trained).
- optimizer: nothing gathered.
SHARD_GRAD_OP keeps every layer unsharded from its forward to its backward: forward,
loss_backward and layer_backward hold the root and all L layers.

ZeRO-3 gathers module by module (deepspeed/runtime/zero/partitioned_param_coordinator.py): while
computing, the largest module's 16-bit parameters and, when it trains, their 16-bit gradients
(DeepSpeed's `4 x largest_layer_params` in estimate_zero3_model_states_mem_needs, stage3.py), plus
the prefetch bucket (stage3_prefetch_bucket_size elements, at most stage3_max_live_parameters
alive in all).
"""
from __future__ import annotations

from dataclasses import dataclass

from vramplan.memory import lora, parameters
from vramplan.memory.dtypes import DTYPE_BYTES
from vramplan.memory.terms import term, total
from vramplan.specs.parallel import ParallelConfig, resolved_bucket

_SOURCE_FSDP = "torch/distributed/fsdp (FSDP1 _runtime_utils.py, FSDP2 _fully_shard/_fsdp_param_group.py), torch 2.13"
_SOURCE_ZERO3 = "deepspeed/runtime/zero/stage3.py, partitioned_param_coordinator.py (0.19.8)"


@dataclass(frozen=True)
class UnitSizes:
    """Bytes of one decoder layer and of the root when gathered, and their trainable elements."""

    layer_bytes: int
    root_bytes: int  # embedding + tail (final norm, lm_head)
    layer_trainable: int
    root_trainable: int
    largest_module: int  # elements of the largest single module (DeepSpeed's largest_layer_params)
    largest_trainable: int  # elements of it that train
    embedding_bytes: int = 0  # the token embedding gathered (its own FSDP2 unit under accelerate; 0 when tied)

    @property
    def tail_bytes(self) -> int:
        """The final norm and lm_head (with the embedding when tied): accelerate's FSDP2 tail unit."""
        return self.root_bytes - self.embedding_bytes


def _layers(model, count: int):
    return model.model_copy(update={"num_hidden_layers": count, "checkpoint_parameters": 0})


def _split(model, measure) -> tuple[int, int]:
    """(per decoder layer, root) of `measure(model)`, from the 1- and 2-layer copies."""
    one, two = measure(_layers(model, 1)), measure(_layers(model, 2))
    return two - one, 2 * one - two


def unit_sizes(model, run, dtypes, base_weight_terms) -> UnitSizes:
    """Gathered bytes and trainable elements of a decoder layer and of the root (module docstring)."""
    gather = DTYPE_BYTES[dtypes.compute]
    moe = dtypes.moe_experts

    def float_elements(m):
        groups = parameters.unquantized_groups(m, moe) if dtypes.base_quantized else parameters.all_parameter_groups(m, moe)
        return parameters.count_elements(groups)

    def lora_elements(m):
        return int(lora.lora_parameter_count(m, run.lora_targets, run.lora_rank, moe)) if run.uses_lora else 0

    def gathered(m):
        codes = total(base_weight_terms(m, run, dtypes)["quantized_weights"]) if dtypes.base_quantized else 0
        return int(codes) + (float_elements(m) + lora_elements(m)) * gather

    def trainable(m):
        if run.method == "full":
            return parameters.count_elements(parameters.all_parameter_groups(m, moe))
        return lora_elements(m)

    layer_bytes, root_bytes = _split(model, gathered)
    layer_trainable, root_trainable = _split(model, trainable)
    modules = [lin.out_features * lin.in_features for lin in model.layer_linears(moe)]
    embedding = model.vocab_size * model.hidden_size
    largest = max([embedding, *modules])
    largest_trainable = largest if run.method == "full" else 0
    embedding_bytes = 0 if model.tie_word_embeddings else embedding * gather
    return UnitSizes(layer_bytes, root_bytes, layer_trainable, root_trainable, largest, largest_trainable,
                     embedding_bytes)


def with_whole_unit_gradients(sizes: UnitSizes, dtypes) -> UnitSizes:
    """Sizes when a unit's flat gradient spans the whole unit (FSDP1, LoRA inside the unit): every
    gathered element of a layer gets a gradient element."""
    from dataclasses import replace

    return replace(sizes, layer_trainable=sizes.layer_bytes // DTYPE_BYTES[dtypes.compute])


def flat_gradient_shard_terms(sizes: UnitSizes, model, parallel: ParallelConfig, dtypes) -> list:
    """FSDP1's gradient shards of whole-unit flat parameters kept until the step (`_saved_grad_shard`,
    _runtime_utils.py), beyond the LoRA gradients: the frozen part of every layer, 1/N each."""
    from vramplan.distributed.shares import SHARD

    frozen = sizes.layer_bytes // DTYPE_BYTES[dtypes.compute]
    return [term("flat-parameter gradient shards over the frozen weights (FSDP1, LoRA inside the unit)",
                 "layers x elements x C / N", (("layers", model.num_hidden_layers), ("elements", frozen),
                                               ("C", DTYPE_BYTES[dtypes.compute]), ("ranks", parallel.shard_count)),
                 _SOURCE_FSDP, rounding=SHARD)]


def fsdp_gathered_terms(sizes: UnitSizes, model, parallel: ParallelConfig, dtypes) -> dict[str, list]:
    """{phase: [Term]} of FSDP1's (and SHARD_GRAD_OP's) unsharded units in flight (module docstring);
    FSDP2 with decoder-layer units is `fsdp2_moment_terms`."""
    if parallel.shard_count == 1:
        return {}
    grad_bytes = DTYPE_BYTES[dtypes.compute]
    root = term("root unit (embeddings, final norm, lm_head), unsharded", "B", (("B", sizes.root_bytes),), _SOURCE_FSDP)
    layers_held = 1 + (1 if parallel.resolved_backward_prefetch else 0)
    in_backward = term("decoder-layer units unsharded in backward", "units x B/unit",
                       (("units", layers_held), ("B/unit", sizes.layer_bytes)), _SOURCE_FSDP)
    layer_grads = [term("the layer's unsharded gradients before reduce-scatter", "elements x C",
                        (("elements", sizes.layer_trainable), ("C", grad_bytes)), _SOURCE_FSDP)] \
        if sizes.layer_trainable else []
    root_grads = [term("the root's unsharded gradients before reduce-scatter", "elements x C",
                       (("elements", sizes.root_trainable), ("C", grad_bytes)), _SOURCE_FSDP)] \
        if sizes.root_trainable else []
    every = term("every decoder layer, unsharded", "layers x B/unit",
                 (("layers", model.num_hidden_layers), ("B/unit", sizes.layer_bytes)), _SOURCE_FSDP)
    if parallel.resolved_strategy == "fsdp-grad-op":
        every = every._replace(name="every decoder layer, unsharded until its backward (SHARD_GRAD_OP)")
        return {"forward": [root, every], "loss_backward": [root, every], "layer_backward": [root, every, *layer_grads],
                "backward_end": [root, *root_grads], "optimizer": [], "generate": []}
    if not parallel.limit_all_gathers:
        in_forward = every._replace(name="every decoder layer's all-gather issued ahead (no rate limiter: upper bound)")
    else:
        in_forward = term("decoder-layer units unsharded in forward", "units x B/unit",
                          (("units", 1 + (1 if parallel.forward_prefetch else 0)), ("B/unit", sizes.layer_bytes)),
                          _SOURCE_FSDP)
    return {"forward": [root, in_forward], "loss_backward": [root], "layer_backward": [root, in_backward, *layer_grads],
            "backward_end": [root, *root_grads], "optimizer": [], "generate": []}


def zero3_gathered_terms(sizes: UnitSizes, model, parallel: ParallelConfig, dtypes) -> dict[str, list]:
    """{phase: [Term]} of ZeRO-3's gathered modules and prefetch bucket (module docstring)."""
    half = DTYPE_BYTES[dtypes.compute]
    prefetch = resolved_bucket(parallel, "stage3_prefetch_bucket_size", model.hidden_size)
    live_left = max(0, parallel.stage3_max_live_parameters - sizes.largest_module)
    prefetch = min(prefetch, live_left)
    working = [term("largest module's 16-bit parameters, gathered", "elements x 16-bit",
                    (("elements", sizes.largest_module), ("B", half)), _SOURCE_ZERO3)]
    if sizes.largest_trainable:
        working.append(term("largest module's 16-bit gradients", "elements x 16-bit",
                            (("elements", sizes.largest_trainable), ("B", half)), _SOURCE_ZERO3))
    if prefetch:
        working.append(term("prefetch bucket (stage3_prefetch_bucket_size, within max_live_parameters)",
                            "elements x 16-bit", (("elements", prefetch), ("B", half)), _SOURCE_ZERO3))
    return {"forward": working, "loss_backward": working, "layer_backward": working, "backward_end": working,
            "optimizer": [], "generate": []}


_SOURCE_FSDP2 = ("torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py (torch 2.13); units as accelerate 1.16 "
                 "fsdp2_prepare_model wraps them; vramplan.simulate.distributed")


def fsdp2_moment_terms(sizes: UnitSizes, model, run, dtypes, batch: int, seq: int, logits_fwd: list,
                       logits_bwd: list) -> dict[str, list[tuple[list, list]]]:
    """FSDP2's phase peaks as alternative moments, each (gathered terms, logits terms); the phase takes the
    larger moment (`fsdp2_phase_terms`). Units as accelerate 1.16 builds them: every decoder layer, the
    embedding (resharded after forward), and the tail - final norm and lm_head, with the embedding when
    tied - which stays gathered from its forward to its backward. L = a layer, E = the embedding,
    T = the tail, in the compute dtype; the simulator (vramplan.simulate.distributed) finds:
    - forward: the last layer's copy-out - its unsharded parameters and two flat all-gather outputs,
      3L (+ T when tied, the tail then holding the embedding) - or the head: the tail unsharded and
      its flat output (2T; tied: T + L) beside the logits;
    - loss_backward: the tail beside the cross-entropy backward, or the lm_head backward: the tail,
      the last layer prefetched (L), the logits' gradient and, when the head trains, its unsharded
      gradient;
    - layer_backward: a layer and the next prefetched (2L) with the layer's unsharded gradients, at the
      last layer (its activations) or the first (the gradient shards all reduced); tied, the tail too,
      gathered until the embedding's backward;
    - backward_end: the embedding's copy-out at the end of backward, 2E; tied, the tail is gathered again
      for the embedding's backward (2T) beside, when it trains, the weight's two unsharded gradients and their sum.
    """
    c = DTYPE_BYTES[dtypes.compute]
    L, E, T = sizes.layer_bytes, sizes.embedding_bytes, sizes.tail_bytes
    tied = model.tie_word_embeddings

    def gathered(name, formula, factors):
        return term(name, formula, factors, _SOURCE_FSDP2)

    last_layer = [gathered("the last layer's copy-out: unsharded parameters and two flat all-gather outputs"
                           + (", and the tail (with the tied embedding)" if tied else ""),
                           "3 x L" + (" + T" if tied else ""), (("units", 3), ("B/unit", L)))]
    if tied:
        last_layer.append(gathered("the tail unit, gathered", "T", (("B", T),)))
    head_forward = ([gathered("the tail unit (final norm, lm_head) and its flat all-gather output", "2 x T",
                              (("units", 2), ("B/unit", T)))] if not tied else
                    [gathered("the tail unit (with the tied embedding) and the last layer's flat output", "T + L",
                              (("B", T + L),))])
    logits_grad = [term("logits gradient (lm_head backward)", "C x b x s x V",
                        (("C", c), ("b", batch), ("s", seq), ("V", model.vocab_size)), "torch.nn.functional.linear backward")]
    tail = [gathered("the tail unit, gathered", "T", (("B", T),))]
    head_backward = [gathered("the tail unit and the last layer prefetched", "T + L", (("B", T + L),))]
    embedding_trainable = model.vocab_size * model.hidden_size if run.method == "full" and not tied else 0
    tail_trainable = sizes.root_trainable - embedding_trainable
    if tail_trainable:
        head_backward.append(gathered("the tail's unsharded gradients", "elements x C", (("elements", tail_trainable), ("C", c))))
    layers = [gathered("a decoder layer and the next one prefetched", "2 x L", (("units", 2), ("B/unit", L)))]
    if sizes.layer_trainable:
        layers.append(gathered("the layer's unsharded gradients before reduce-scatter", "elements x C",
                               (("elements", sizes.layer_trainable), ("C", c))))
    # tied, the tail unit holds the embedding, whose backward comes last: the unit stays gathered through backward
    tail_kept = [gathered("the tail unit (with the tied embedding), kept gathered until the embedding's backward", "T",
                          (("B", T),))] if tied else []
    if tied:  # the tail holds the embedding: resharded after the lm_head's backward, gathered again for the embedding's
        end = [gathered("the tail unit (with the tied embedding) gathered again for the embedding's backward", "T",
                        (("B", T),))]
        if run.method == "full":
            end.append(gathered("the tied weight's unsharded gradients: lm_head's (held), the embedding's and their "
                                "sum (autograd adds out of place)", "3 x V x h x C",
                                (("grads", 3), ("elements", model.vocab_size * model.hidden_size), ("C", c))))
    else:
        end = [gathered("the embedding's copy-out at the end of backward (unsharded + flat output)", "2 x E",
                        (("units", 2), ("B/unit", E)))]
    return {"forward": [{"gathered_parameters": last_layer, "logits_loss": []},
                        {"gathered_parameters": head_forward, "logits_loss": list(logits_fwd)}],
            "loss_backward": [{"gathered_parameters": tail, "logits_loss": list(logits_bwd)},
                              {"gathered_parameters": head_backward, "logits_loss": logits_grad}],
            "layer_backward": [{"gathered_parameters": layers + tail_kept}] + (
                [{"gathered_parameters": head_backward + [gathered(
                    "the lm_head's unsharded gradient of the tied weight, held for the embedding's", "V x h x C",
                    (("elements", model.vocab_size * model.hidden_size), ("C", c)))], "logits_loss": logits_grad,
                  "activations": "loss_backward"}] if tied and run.method == "full" else []),
            "backward_end": [{"gathered_parameters": end}],
            "first_layer_gathered": layers + ([gathered("the tail unit (with the tied embedding) prefetched for the "
                                                        "embedding's backward", "T", (("B", T),))] if tied else [])}


def fsdp2_phase_terms(phases: dict, moments: dict, first_layer: dict) -> dict:
    """`phases` with each FSDP2 phase set to its largest moment: a moment replaces some components'
    terms. layer_backward has a second moment, the first layer's backward (`first_layer`: its
    activations, and every gradient shard reduced by then), which outgrows the last layer's when
    the gradients are large (full fine-tuning); at the end of backward only the first layer's
    incoming gradient remains of the activations."""
    moments = {phase: list(options) for phase, options in moments.items()}
    first_gathered = moments.pop("first_layer_gathered", None)
    if "layer_backward" in moments:
        first = {**moments["layer_backward"][0], **first_layer}
        if first_gathered is not None:
            first["gathered_parameters"] = first_gathered
        moments["layer_backward"].append(first)
    if "backward_end" in moments:
        moments["backward_end"] = [{**option, "activations": first_layer.get("incoming", [])}
                                   for option in moments["backward_end"]]
    resolved = {phase: [{k: (phases[v][k] if isinstance(v, str) else v) for k, v in option.items() if k != "incoming"}
                        for option in options] for phase, options in moments.items()}  # "loss_backward": its terms
    return choose_moments(phases, resolved)


def fsdp2_single_unit_moments(sizes: UnitSizes, model) -> dict[str, list[dict]]:
    """FSDP2 under transformers' Trainer with a peft model: the Trainer sets peft's `fsdp_auto_wrap_policy`
    (a functools.partial of `_or_policy`), which accelerate 1.16's `fsdp2_prepare_model` does not
    recognise (it knows the transformer and size-based policies), so no decoder layer becomes a unit
    and the root holds the whole model: gathered whole from forward to the end of backward, and at its
    copy-out, before any compute, twice (unsharded and the flat all-gather output) (vramplan.simulate.distributed,
    wrap policy "accelerate-peft": Llama-2-7B LoRA on 8 ranks peaks at 26.4 GiB against 3.0 GiB with
    decoder-layer units)."""
    whole = sizes.root_bytes + model.num_hidden_layers * sizes.layer_bytes
    double = [term("the whole model as one unit at its copy-out, before any compute: unsharded and its flat "
                   "all-gather output (accelerate FSDP2 with peft's wrap policy)", "2 x B", (("units", 2), ("B", whole)),
                   _SOURCE_FSDP2)]
    single = [term("the whole model as one unit, unsharded (accelerate FSDP2 with peft's wrap policy)", "B",
                   (("B", whole),), _SOURCE_FSDP2)]
    return {"forward": [{"gathered_parameters": double, "activations": [], "logits_loss": []},
                        {"gathered_parameters": single}],
            "loss_backward": [{"gathered_parameters": single}], "layer_backward": [{"gathered_parameters": single}],
            "backward_end": [{"gathered_parameters": single}]}


def choose_moments(phases: dict, moments: dict) -> dict:
    """`phases` with each phase set to its largest moment (a moment replaces some components' terms)."""
    out = {}
    for phase, comps in phases.items():
        if phase in moments:
            options = [{**comps, **option} for option in moments[phase]]
            comps = max(options, key=lambda option: sum(total(items) for items in option.values()))
        out[phase] = dict(comps)
    return out

