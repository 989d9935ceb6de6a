"""The explorer's state: the knobs as the user left them and the library's answer for them.

No Textual here. Every number comes from the same calls the CLI makes (`resolve_model`,
`get_gpu`, `make_run`, `plan`, the solvers, `advise`); a change that the library rejects
raises InputError and leaves the last good state untouched.
"""
from __future__ import annotations

import types
import typing

from vramplan import solvers
from vramplan.cli.fit import breakdown_json
from vramplan.emit_hf import hf_snippet
from vramplan.errors import InputError
from vramplan.estimate import make_run, plan
from vramplan.gpus import get_gpu
from vramplan.present import command_line
from vramplan.resolve import resolve_model
from vramplan.specs import Breakdown, GPUSpec, ModelSpec, RunConfig

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


class WhatIf:
    """Model, GPU and run as the user set them, and the Breakdown the planner gives."""

    def __init__(self, model_text: str = "13b", gpu_text: str = "t4", run: RunConfig | None = None) -> None:
        self.model_text = model_text.strip()
        self.gpu_text = gpu_text.strip()
        self.model: ModelSpec = resolve_model(self.model_text)
        self.gpu: GPUSpec = get_gpu(self.gpu_text)
        self.run: RunConfig = run if run is not None else make_run()
        self.breakdown: Breakdown = plan(self.model, self.gpu, self.run)

    def _commit(self, model_text: str, gpu_text: str, model: ModelSpec, gpu: GPUSpec, run: RunConfig) -> Breakdown:
        breakdown = plan(model, gpu, run)  # raises before anything changes
        self.model_text, self.gpu_text, self.model, self.gpu, self.run = model_text, gpu_text, model, gpu, run
        self.breakdown = breakdown
        return breakdown

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
        return command_line(self.model_text, self.gpu_text, self.run)

    def plan_json(self) -> str:
        return breakdown_json(self.breakdown)


def largest_that_fit(model: ModelSpec, gpu: GPUSpec, run: RunConfig) -> dict[str, int]:
    """Largest micro-batch, sequence length and (LoRA runs) rank that fit, from the solvers."""
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
