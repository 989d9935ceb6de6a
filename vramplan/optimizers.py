"""The optimizers vramplan plans for: one entry each, every fact about it in that entry.

An entry says what state the optimizer keeps per parameter element (how many full-size
tensors, in which dtype; bitsandbytes' 8-bit blockwise and paged rules with their size
thresholds; Adafactor's factored moments), which temporaries its step makes, which class the
validation harness and the simulator construct, what `TrainingArguments(optim=...)` calls it
and how `advise` offers it. The memory formulas that read these fields live in
`vramplan.memory.optimizer`; the CLI's `--optimizer` choices, RunConfig's allowed values,
`--emit hf`, the simulator and the harness all read this table. Adding an optimizer is one
`register(OptimizerEntry(...))` here (plus a simulator class if it cannot run on fake tensors).

Sources (pinned): torch 2.13 torch/optim/adamw.py, sgd.py; bitsandbytes 0.50
bitsandbytes/optim/optimizer.py (`Optimizer8bit.init_state`, `get_state_buffer`:
`min_8bit_size=4096`, paged buffers for tensors of at least 1e5 elements, blockwise absmax per
256 elements, two 256-entry fp32 quantization maps); transformers 5.24
transformers/optimization.py (`Adafactor`) and training_args.py (`OptimizerNames`).
Pure Python: no torch here; classes are named by dotted path and imported by whoever runs them.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

# bitsandbytes/optim/optimizer.py (0.50): `min_8bit_size` default of Optimizer8bit and its subclasses,
# and the element count from which `get_state_buffer` allocates paged (cudaMallocManaged) buffers.
BNB_MIN_8BIT_SIZE = 4096
BNB_MIN_PAGED_SIZE = 100_000
BNB_8BIT_BLOCKSIZE = 256  # blockwise 8-bit optimizer state: one fp32 absmax per 256 elements (bitsandbytes >= 0.44)
BNB_DYNAMIC_MAP_BYTES = 256 * 4  # qmap1 / qmap2: 256 fp32 entries each, shared by all tensors

STEP_TEMPS = ("none", "foreach_sqrt_copy", "adafactor_loop")
SIMULATED_BY = ("library", "bnb_shaped")


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimizer. State per parameter tensor of n elements:

    plain (not eight_bit, not factored): state_tensors x n x state_bytes (None: the parameter's bytes);
    eight_bit: state_tensors x (n x 1 B + fp32 absmax per BNB_8BIT_BLOCKSIZE) when n >= min_8bit_size,
    else state_tensors x n x 4 B; paged: those buffers move to CUDA managed memory when n >= min_paged_size;
    factored (Adafactor): fp32 row + column second moment for matrices, a full one for vectors.
    """

    name: str  # the RunConfig / --optimizer value
    description: str  # what it is, in a few words (advice, docs)
    state_tensors: int  # full-size state tensors per parameter (Adam: exp_avg, exp_avg_sq)
    state_bytes: int | None  # bytes per state element; None: the trainable parameter's dtype
    step_temp: str  # which temporaries `step()` makes: one of STEP_TEMPS
    library_class: str  # dotted path of the class the validation harness constructs
    class_kwargs: tuple[tuple[str, object], ...]  # its keyword arguments besides lr
    simulated_by: str  # "library": that class runs on fake tensors; "bnb_shaped": simulate.optimizers.BnbShapedAdam
    hf_optim: str  # transformers TrainingArguments(optim=...) (training_args.py OptimizerNames)
    source: str  # library file + version the state and step rules come from
    hf_optim_args: str | None = None  # TrainingArguments(optim_args=...) that selects the same settings
    eight_bit: bool = False
    min_8bit_size: int = 0
    paged: bool = False
    min_paged_size: int = 0
    factored: bool = False
    advice_state_rank: int | None = None  # on-device state, heavier = higher; None: advise offers no switch from it
    advice_offer: bool = False  # advise offers switching to it from an optimizer of higher state rank
    advice_full_only: bool = False  # offered only for full fine-tuning (for adapters the saving is small)

    @property
    def uses_bitsandbytes(self) -> bool:
        return self.library_class.startswith("bitsandbytes.")

    @property
    def size_thresholds(self) -> tuple[int, ...]:
        """Element counts at which a tensor's state changes format (the LoRA-rank solver's breakpoints)."""
        return tuple(size for size, applies in ((self.min_8bit_size, self.eight_bit),
                                                (self.min_paged_size, self.paged)) if applies)

    def __post_init__(self) -> None:
        if self.step_temp not in STEP_TEMPS:
            raise ValueError(f"optimizer {self.name}: step_temp must be one of {STEP_TEMPS}")
        if self.simulated_by not in SIMULATED_BY:
            raise ValueError(f"optimizer {self.name}: simulated_by must be one of {SIMULATED_BY}")


_TORCH = "torch 2.13 torch/optim/adamw.py, sgd.py"
_BNB = "bitsandbytes 0.50 bitsandbytes/optim/optimizer.py (init_state, get_state_buffer)"
_BNB_8BIT = dict(eight_bit=True, min_8bit_size=BNB_MIN_8BIT_SIZE)
_BNB_PAGED = dict(paged=True, min_paged_size=BNB_MIN_PAGED_SIZE)

_REGISTRY: dict[str, OptimizerEntry] = {}


def register(entry: OptimizerEntry) -> OptimizerEntry:
    """Add `entry` (its name must be new); RunConfig, the CLI and the planner accept it from then on."""
    if entry.name in _REGISTRY:
        raise ValueError(f"optimizer {entry.name} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


@contextlib.contextmanager
def registered(entry: OptimizerEntry):
    """`entry` registered for the duration of a `with` block (tests, experiments)."""
    register(entry)
    try:
        yield entry
    finally:
        del _REGISTRY[entry.name]


def optimizer_names() -> tuple[str, ...]:
    """Every registered name, in registration order (the CLI's choices)."""
    return tuple(_REGISTRY)


def get_optimizer(name: str) -> OptimizerEntry:
    """The entry for `name`; ValueError listing the allowed names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; allowed: {', '.join(_REGISTRY)}") from None


def optimizer_class(entry: OptimizerEntry):
    """The class `entry.library_class` names, imported now (torch, bitsandbytes or transformers)."""
    import importlib

    module, _, name = entry.library_class.rpartition(".")
    return getattr(importlib.import_module(module), name)


def all_optimizers() -> tuple[OptimizerEntry, ...]:
    return tuple(_REGISTRY.values())


register(OptimizerEntry(
    "adamw", "AdamW (torch, foreach)", state_tensors=2, state_bytes=None, step_temp="foreach_sqrt_copy",
    library_class="torch.optim.AdamW", class_kwargs=(("foreach", True),), simulated_by="library",
    hf_optim="adamw_torch", source=_TORCH + " (_multi_tensor_adamw: foreach is torch's default on CUDA)",
    advice_state_rank=3))
register(OptimizerEntry(
    "adamw_fused", "AdamW (torch, fused kernel)", state_tensors=2, state_bytes=None, step_temp="none",
    library_class="torch.optim.AdamW", class_kwargs=(("fused", True),), simulated_by="library",
    hf_optim="adamw_torch_fused", source=_TORCH + " (_fused_adamw updates in place)", advice_state_rank=3))
register(OptimizerEntry(
    "adamw_8bit", "8-bit AdamW (bitsandbytes)", state_tensors=2, state_bytes=4, step_temp="none",
    library_class="bitsandbytes.optim.AdamW8bit", class_kwargs=(), simulated_by="bnb_shaped",
    hf_optim="adamw_bnb_8bit", source=_BNB, advice_state_rank=2, advice_offer=True, **_BNB_8BIT))
register(OptimizerEntry(
    "paged_adamw", "paged 32-bit AdamW (bitsandbytes)", state_tensors=2, state_bytes=4, step_temp="none",
    library_class="bitsandbytes.optim.PagedAdamW", class_kwargs=(), simulated_by="bnb_shaped",
    hf_optim="paged_adamw_32bit", source=_BNB, advice_state_rank=2, **_BNB_PAGED))
register(OptimizerEntry(
    "paged_adamw_8bit", "paged 8-bit AdamW (state in CUDA managed memory, outside the allocator)",
    state_tensors=2, state_bytes=4, step_temp="none",
    library_class="bitsandbytes.optim.PagedAdamW8bit", class_kwargs=(), simulated_by="bnb_shaped",
    hf_optim="paged_adamw_8bit", source=_BNB, advice_state_rank=1, advice_offer=True, **_BNB_8BIT, **_BNB_PAGED))
register(OptimizerEntry(
    "sgd", "SGD without momentum", state_tensors=0, state_bytes=None, step_temp="none",
    library_class="torch.optim.SGD", class_kwargs=(("foreach", True),), simulated_by="library",
    hf_optim="sgd", source=_TORCH))
register(OptimizerEntry(
    "sgd_momentum", "SGD with momentum 0.9", state_tensors=1, state_bytes=None, step_temp="none",
    library_class="torch.optim.SGD", class_kwargs=(("momentum", 0.9), ("foreach", True)), simulated_by="library",
    hf_optim="sgd", hf_optim_args="momentum=0.9",
    source=_TORCH + " (momentum_buffer: a clone of the gradient on the first step)"))
register(OptimizerEntry(
    "adafactor", "Adafactor (factored second moment, no first moment)", state_tensors=0, state_bytes=4,
    step_temp="adafactor_loop", library_class="transformers.optimization.Adafactor",
    class_kwargs=(("scale_parameter", False), ("relative_step", False), ("warmup_init", False)),
    simulated_by="library", hf_optim="adafactor", factored=True, advice_state_rank=1, advice_offer=True,
    advice_full_only=True,
    source="transformers 5.24 transformers/optimization.py (Adafactor, beta1=None: fp32 factored moments)"))
