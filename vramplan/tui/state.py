"""The explorer's state: the knobs as the user left them and the library's answer for them.

No Textual here. Every number comes from the same calls the CLI makes (`resolve_model`,
`get_gpu`, `make_run`, `plan`, the solvers, `advise`); a change that the library rejects
raises InputError and leaves the last good state untouched.

More than one GPU (a GPU count, a strategy or an offload) plans with `plan_ranks`, as
`vramplan fit --gpus N --strategy S` does: `breakdown` is then the worst rank's and `cluster`
holds every rank and the host; on one GPU `cluster` is None and nothing else changes.
"""
from __future__ import annotations

import types
import typing

from vramplan import solvers
from vramplan.cli.fit import breakdown_json
from vramplan.emit_hf import hf_snippet
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan, plan_ranks
from vramplan.gpus import get_gpu
from vramplan.present import command_line
from vramplan.resolve import resolve_model
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig
from vramplan.specs.cluster import ClusterPlan
from vramplan.specs.parallel import ParallelConfig

# The Select value that stands for None ("let the planner choose") in optional fields.
AUTO = "(auto)"


def field_type(name: str):
    """RunConfig field `name`'s type without `| None`, and whether None is allowed."""
    annotation = RunConfig.model_fields[name].annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def parse_field(name: str, raw) -> object:
    """The RunConfig value a widget's raw value means; InputError names the field."""
    base, optional = field_type(name)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip()
    if optional and text in ("", AUTO):
        return None
    for kind, what in ((int, "a whole number"), (float, "a number")):
        if base is kind:
            try:
                return kind(text)
            except ValueError:
                raise InputError(name, f"must be {what} (got {text!r})") from None
    return text


# The multi-GPU knobs: knob key -> ParallelConfig field.
PARALLEL_KNOBS = {"gpu_count": "gpus", "strategy": "strategy", "offload": "offload"}
HOST_RAM_KNOB = "host_ram"


def parse_parallel(parallel: ParallelConfig, key: str, raw) -> ParallelConfig:
    """`parallel` with knob `key` set to the widget's raw value; InputError names the knob."""
    from pydantic import ValidationError

    text = str(raw).strip()
    if key == "gpu_count":
        try:
            value: object = int(text)
        except ValueError:
            raise InputError(key, f"must be a whole number (got {text!r})") from None
    else:
        value = None if text in ("", AUTO) else text
    try:
        return ParallelConfig(**(parallel.model_dump() | {PARALLEL_KNOBS[key]: value}))
    except ValidationError as exc:
        message = str(exc.errors()[0].get("msg", "")).removeprefix("Value error, ")
        raise InputError(key, message) from None


def parse_host_ram(text: str) -> tuple[int | None, str]:
    """(bytes or None, where they came from) for the host RAM knob: blank is this machine's RAM,
    `unknown` skips the host verdict, else a size as `--host-ram` takes it (512GiB)."""
    from vramplan.cli.parallel_flags import machine_ram_bytes
    from vramplan.gpus import parse_size

    text = str(text).strip()
    if not text:
        return machine_ram_bytes(), "this machine's RAM"
    if text.lower() == "unknown":
        return None, "not checked"
    value = parse_size(text)
    if value is None:
        raise InputError(HOST_RAM_KNOB, f"give a size like 512GiB, blank (this machine) or unknown (got {text!r})")
    return value, "as given"


class WhatIf:
    """Model, GPU, run and GPU layout as the user set them, and the Breakdown the planner gives
    (the worst rank's on more than one GPU, with the whole `cluster` beside it)."""

    def __init__(self, model_text: str = "13b", gpu_text: str = "t4", run: RunConfig | None = None,
                 parallel: ParallelConfig | None = None) -> None:
        from vramplan.cli.parallel_flags import split_gpu_count

        count, gpu_name = split_gpu_count(gpu_text.strip())  # `--gpu 4xa100-40g`: four of them
        self.model_text = model_text.strip()
        self.gpu_text = gpu_name.strip()
        self.model: ModelSpec = resolve_model(self.model_text)
        self.gpu: GPUSpec = get_gpu(self.gpu_text)
        self.run: RunConfig = run if run is not None else make_run()
        self.parallel: ParallelConfig = parallel or ParallelConfig()
        if count is not None:
            self.parallel = parse_parallel(self.parallel, "gpu_count", count)
        self.host_ram_text = ""
        self.host_ram_bytes, self.host_ram_source = parse_host_ram("") if not self.parallel.is_single else (None, "")
        self.breakdown: Breakdown
        self.cluster: ClusterPlan | None
        self.breakdown, self.cluster = self._plan(self.model, self.gpu, self.run, self.parallel, self.host_ram_bytes)

    @staticmethod
    def _plan(model, gpu, run, parallel, host_ram_bytes) -> tuple[Breakdown, ClusterPlan | None]:
        if parallel.is_single:
            return plan(model, gpu, run), None
        cluster = plan_ranks(model, gpu, run, parallel=parallel, host_ram_bytes=host_ram_bytes)
        return cluster.worst_rank.breakdown, cluster

    def _commit(self, model_text: str, gpu_text: str, model: ModelSpec, gpu: GPUSpec, run: RunConfig,
                parallel: ParallelConfig | None = None, host_ram_text: str | None = None) -> Breakdown:
        parallel = self.parallel if parallel is None else parallel
        host_ram_text = self.host_ram_text if host_ram_text is None else host_ram_text
        host_ram, source = (None, "") if parallel.is_single else parse_host_ram(host_ram_text)
        breakdown, cluster = self._plan(model, gpu, run, parallel, host_ram)  # raises before anything changes
        self.model_text, self.gpu_text, self.model, self.gpu, self.run = model_text, gpu_text, model, gpu, run
        self.parallel, self.host_ram_text, self.host_ram_bytes, self.host_ram_source = parallel, host_ram_text, host_ram, source
        self.breakdown, self.cluster = breakdown, cluster
        return breakdown

    def set_parallel(self, key: str, raw) -> Breakdown:
        """One multi-GPU knob: the GPU count, the strategy or the offload."""
        parallel = parse_parallel(self.parallel, key, raw)
        return self._commit(self.model_text, self.gpu_text, self.model, self.gpu, self.run, parallel=parallel)

    def set_host_ram(self, raw) -> Breakdown:
        text = str(raw).strip()
        parse_host_ram(text)  # a bad size is refused even while one GPU does not read it
        return self._commit(self.model_text, self.gpu_text, self.model, self.gpu, self.run, host_ram_text=text)

    def set_model(self, text: str) -> Breakdown:
        model = resolve_model(text)
        if model == self.model and model.source == "catalog":
            text = self.model_text  # the list says "llama-2-13b"; keep the user's "13b"
        return self._commit(text.strip(), self.gpu_text, model, self.gpu, self.run)

    def set_gpu(self, text: str) -> Breakdown:
        if not text.strip():
            raise InputError("gpu", "give a profile name or a size like 24GiB")
        gpu = get_gpu(text)
        if gpu == self.gpu:
            text = self.gpu_text
        return self._commit(self.model_text, text.strip(), self.model, gpu, self.run)

    def set_field(self, name: str, raw) -> Breakdown:
        value = parse_field(name, raw)
        run = make_run(**(self.run.model_dump() | {name: value}))
        return self._commit(self.model_text, self.gpu_text, self.model, self.gpu, run)

    def adopt(self, model: ModelSpec, gpu: GPUSpec, run: RunConfig) -> Breakdown:
        """Take a whole new state (an advice item): model and GPU by their catalog names."""
        model_text = self.model_text if model == self.model else model.name
        gpu_text = self.gpu_text if gpu == self.gpu else gpu.key
        return self._commit(model_text, gpu_text, model, gpu, run)

    def command_line(self) -> str:
        """`vramplan fit ...` for this state; on more than one GPU with the layout flags `fit` takes."""
        line = command_line(self.model_text, self.gpu_text, self.run)
        if self.parallel.is_single:
            return line
        import shlex

        from vramplan.cli.parallel_flags import flag

        parallel = self.parallel
        given = {"gpus": parallel.gpus, "strategy": parallel.strategy,
                 "offload": None if parallel.offload == "none" else parallel.offload}
        flags = [f"{flag(name)} {value}" for name, value in given.items() if value is not None]
        if self.host_ram_text:
            flags.append(f"--host-ram {shlex.quote(self.host_ram_text)}")
        return " ".join([line, *flags])

    def plan_json(self) -> str:
        return breakdown_json(self.breakdown, cluster=self.cluster)


def largest_that_fit(model: ModelSpec, gpu: GPUSpec, run: RunConfig,
                     parallel: ParallelConfig | None = None) -> dict[str, int]:
    """Largest micro-batch, sequence length and (LoRA runs) rank that fit, from the solvers; on more
    than one GPU those at which every rank fits (`distributed.solve.max_per_rank`, as `vramplan max --gpus`)."""
    if parallel is not None and not parallel.is_single:
        from vramplan.distributed.solve import max_per_rank

        dimensions = {"micro-batch": "batch", "sequence length": "seq", **({"LoRA rank": "rank"} if run.uses_lora else {})}
        return {name: max_per_rank(dimension, model, gpu, run, parallel, limit=solvers.DEFAULT_LIMITS[dimension])
                for name, dimension in dimensions.items()}
    limits = {
        "micro-batch": solvers.max_micro_batch(model, gpu, run),
        "sequence length": solvers.max_seq_len(model, gpu, run),
    }
    if run.uses_lora:
        limits["LoRA rank"] = solvers.max_lora_rank(model, gpu, run)
    return limits


def emit_hf_snippet(state: WhatIf) -> str:
    """The transformers/peft code for this run, as `vramplan fit --emit hf` prints it."""
    return hf_snippet(state.model, state.gpu, state.run, state.breakdown)
