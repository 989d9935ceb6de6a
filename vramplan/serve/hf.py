"""The Hugging Face engine: one `generate()` call, today's `fit --method inference` plan behind the
serve vocabulary."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

ENGINE = "hf"


@dataclass(frozen=True)
class HfPlan:
    """A `generate()` plan: the inference Breakdown of vramplan.estimate.plan."""

    breakdown: object  # vramplan.specs.breakdown.Breakdown

    @property
    def fits(self) -> bool:
        return self.breakdown.fits

    def to_json(self) -> dict:
        from vramplan.cli.fit import breakdown_json

        data = json.loads(breakdown_json(self.breakdown))
        data["engine"] = ENGINE
        return data

    def render_text(self) -> str:
        from vramplan.cli.fit import render

        return render(self.breakdown)


FLAGS = {"seq_len": "--seq", "micro_batch_size": "--batch", "max_new_tokens": "--max-new-tokens"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vramplan.cli.run_flags import _typed
    from vramplan.text import parse_int

    group = parser.add_argument_group("Hugging Face generate() (--engine hf)")
    group.add_argument("--seq", type=_typed(parse_int, "--seq"), default=None, metavar="TOKENS", help="prompt tokens (default 512)")
    group.add_argument("--batch", type=_typed(parse_int, "--batch"), default=None, metavar="N", help="sequences per generate() call (default 1)")
    group.add_argument("--max-new-tokens", type=_typed(parse_int, "--max-new-tokens"), default=None, metavar="TOKENS", help="generated tokens (default 256)")


def plan_from_args(model, gpu, args) -> HfPlan:
    from vramplan.errors import InputError
    from vramplan.estimate import make_run, plan

    fields = {"method": "inference", "seq_len": args.seq, "micro_batch_size": args.batch,
              "max_new_tokens": args.max_new_tokens, "weight_format": getattr(args, "format", None)}
    try:
        run = make_run(**{name: value for name, value in fields.items() if value is not None})
    except InputError as exc:  # name the flag the user typed
        field = exc.field.split(".")[0]
        raise InputError(FLAGS.get(field, "--format" if field == "weight_format" else exc.field), exc.message) from None
    return HfPlan(plan(model, gpu, run))
