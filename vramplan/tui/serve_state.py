"""The serving view's state: an engine, its knobs as the user left them, and the engine's plan.

No Textual here. Knobs are the engine's own `vramplan serve` flags: each raw value is read by the
parser the engine module builds (`add_arguments`), so the TUI accepts and refuses exactly what the
CLI does, and the plan is `plan_from_args` as `serve` calls it. A value the engine rejects raises
InputError and leaves the last good plan in place. Model and GPU are the explorer's (WhatIf).
"""
from __future__ import annotations

import argparse
import re
import shlex

from vramplan.errors import InputError

TRAIN = "train (fit)"
AUTO = "(auto)"  # as vramplan.tui.state.AUTO: the engine's default

# Engine -> (flag dest, flag as `serve` spells it, label) of the knobs shown, in tab order.
KNOBS = {
    "vllm": (("format", "--format", "weights"), ("gpu_memory_utilization", "--gpu-memory-utilization", "GPU mem util"),
             ("max_model_len", "--max-model-len", "max len"), ("max_num_seqs", "--max-num-seqs", "max seqs"),
             ("kv_cache_dtype", "--kv-cache-dtype", "KV cache")),
    "llama.cpp": (("format", "--format", "weights"), ("n_gpu_layers", "--n-gpu-layers", "-ngl"),
                  ("ctx_size", "--ctx-size", "ctx size"), ("cache_type_k", "--cache-type-k", "cache K"),
                  ("cache_type_v", "--cache-type-v", "cache V"), ("n_parallel", "--n-parallel", "parallel"),
                  ("host_ram", "--host-ram", "host RAM")),
    "hf": (("format", "--format", "weights"), ("seq", "--seq", "prompt"), ("batch", "--batch", "batch"),
           ("max_new_tokens", "--max-new-tokens", "new tokens")),
}
ENGINES = tuple(KNOBS)
# What a blank knob means (the engine's default), shown as the field's placeholder.
BLANK = {"format": "the checkpoint's", "gpu_memory_utilization": "0.9", "max_model_len": "the model's max",
         "max_num_seqs": "256 (1024 on big GPUs)", "n_gpu_layers": "largest that fits; or all", "ctx_size": "0: training context",
         "n_parallel": "1", "host_ram": "64GiB; blank: not checked", "seq": "512", "batch": "1", "max_new_tokens": "256"}
# Integer knobs moved in powers of two (up/down double and halve them, as in the explorer).
DOUBLING = {"max_model_len", "max_num_seqs", "ctx_size", "seq", "max_new_tokens"}
INTEGER = DOUBLING | {"n_parallel", "batch"}


def weight_formats(engine: str) -> tuple[str, ...]:
    """The --format values each engine loads (its own module's list)."""
    if engine == "vllm":
        from vramplan.serve.vllm import WEIGHT_FORMATS

        return WEIGHT_FORMATS
    if engine == "llama.cpp":
        from vramplan.serve.llamacpp import SMALLER_FORMATS

        return SMALLER_FORMATS
    from vramplan.specs.run import field_choices

    return tuple(field_choices("weight_format"))


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are InputError(flag, message), not an exit."""

    def error(self, message: str):
        match = re.match(r"argument ([^:]+): (.*)", message)
        if match:
            flag = next((f for f in match.group(1).split("/") if f.startswith("--")), match.group(1))
            raise InputError(flag, match.group(2))
        raise InputError("serve", message)


def engine_parser(engine: str) -> argparse.ArgumentParser:
    """`serve`'s flags for one engine: --format, --host-ram and the engine module's own."""
    from vramplan.cli.serve import add_host_ram_argument, engine_module

    parser = _Parser(prog=f"serve --engine {engine}", add_help=False)
    parser.add_argument("--format", default=None)
    add_host_ram_argument(parser)
    engine_module(engine).add_arguments(parser)
    return parser


def knob_choices(engine: str, dest: str) -> tuple[str, ...] | None:
    """The closed set a knob takes (a list in the TUI), from the engine's own flag; None: free text."""
    if dest == "format":
        return weight_formats(engine)
    action = next(a for a in engine_parser(engine)._actions if a.dest == dest)
    return tuple(action.choices) if action.choices else None


class ServeWhatIf:
    """One engine's knobs and plan for the explorer's model and GPU."""

    def __init__(self, whatif, engine: str = "vllm") -> None:
        self.whatif = whatif
        self.raw: dict[str, dict[str, str]] = {name: {dest: "" for dest, _, _ in knobs} for name, knobs in KNOBS.items()}
        self.engine = engine
        self.plan = self._plan(engine, self.raw[engine])

    def argv(self, engine: str | None = None, raw: dict[str, str] | None = None) -> list[str]:
        engine = engine or self.engine
        raw = self.raw[engine] if raw is None else raw
        flags = {dest: flag for dest, flag, _ in KNOBS[engine]}
        out = []
        for dest, value in raw.items():
            if str(value).strip() not in ("", AUTO):
                out += [flags[dest], str(value).strip()]
        return out

    def _plan(self, engine: str, raw: dict[str, str]):
        from vramplan.cli.serve import engine_module, host_ram_bytes

        args = engine_parser(engine).parse_args(self.argv(engine, raw))
        args.engine = engine
        args.host_ram_bytes = host_ram_bytes(args)
        return engine_module(engine).plan_from_args(self.whatif.model, self.whatif.gpu, args)

    def set_engine(self, engine: str):
        if engine not in KNOBS:
            raise InputError("engine", f"one of {', '.join(ENGINES)} (got {engine})")
        plan = self._plan(engine, self.raw[engine])
        self.engine, self.plan = engine, plan
        return plan

    def set_knob(self, dest: str, raw) -> object:
        values = self.raw[self.engine] | {dest: "" if raw is None else str(raw)}
        plan = self._plan(self.engine, values)  # raises before anything changes
        self.raw[self.engine], self.plan = values, plan
        return plan

    def refresh(self):
        """Plan again for the explorer's model and GPU (they may have changed)."""
        self.plan = self._plan(self.engine, self.raw[self.engine])
        return self.plan

    def headline(self) -> dict:
        from vramplan.serve.headline import headline

        return headline(self.engine, self.plan)

    def command_line(self) -> str:
        words = ["vramplan", "serve", "--engine", self.engine, "--model", self.whatif.model_text,
                 "--gpu", self.whatif.gpu_text, *self.argv()]
        return " ".join(shlex.quote(word) for word in words)


def verdict_line(engine: str, plan) -> str:
    """The serving verdict in one line (plain text): the engine's word and its headline numbers."""
    from vramplan.present import gib
    from vramplan.serve.headline import headline

    h = headline(engine, plan)
    if engine == "vllm":
        word = "STARTS" if h["starts"] else "DOES NOT START"
        return (f"{word}: KV pool {gib(h['kv_pool_bytes'])} GiB, {h['kv_cache_tokens']} tokens, "
                f"{h['max_concurrency']:.2f}x concurrency at max-model-len {h['max_model_len']}; "
                f"largest max-model-len that starts {h['largest_max_model_len']}")
    if engine == "llama.cpp":
        word = "FITS" if h["fits"] else "DOES NOT FIT"
        return (f"{word}: -ngl {h['n_gpu_layers']} of {h['layers_total']} (largest {h['max_gpu_layers']}), "
                f"GPU {gib(h['gpu_bytes'])} GiB, host {gib(h['host_bytes'])} GiB; largest ctx {h['max_ctx_size']}")
    word = "FITS" if plan.fits else "DOES NOT FIT"
    return (f"{word}: needs {gib(h['required_bytes'])} GiB of {gib(h['capacity_bytes'])} GiB, "
            f"headroom {gib(h['headroom_bytes'])} GiB")
