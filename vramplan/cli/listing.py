"""`vramplan models` and `vramplan gpus`: what the bundled catalog and profiles hold."""
from __future__ import annotations

import json

from vramplan.present import gib, table


def add_parser(subparsers) -> None:
    models = subparsers.add_parser("models", help="list the bundled model catalog",
                                   description="List the bundled model catalog with aliases.")
    models.add_argument("--json", action="store_true", help="print as JSON")
    models.add_argument("--names", action="store_true", help="names and aliases only, one per line (shell completion)")
    models.set_defaults(handler=run_models)
    gpus = subparsers.add_parser("gpus", help="list the GPU profiles",
                                 description="List the GPU profiles (gpu_profiles/*.toml).")
    gpus.add_argument("--json", action="store_true", help="print as JSON")
    gpus.add_argument("--names", action="store_true", help="keys and aliases only, one per line (shell completion)")
    gpus.set_defaults(handler=run_gpus)


def run_models(args) -> int:
    from vramplan.catalog import list_models, model_aliases
    from vramplan.memory.parameters import parameter_count

    aliases = model_aliases()
    specs = list_models()
    if args.names:
        print("\n".join(name for s in specs for name in [s.name, *_short_aliases(aliases.get(s.name, []), most=99)]))
        return 0
    if args.json:
        print(json.dumps([{**s.model_dump(mode="json"), "parameters": parameter_count(s),
                           "aliases": aliases.get(s.name, [])} for s in specs], indent=2))
        return 0
    rows = [[s.name, ", ".join(_short_aliases(aliases.get(s.name, []))), f"{parameter_count(s) / 1e9:.2f}B",
             str(s.num_hidden_layers), str(s.hidden_size), str(s.vocab_size)] for s in specs]
    print(table(["model", "aliases", "params", "layers", "hidden", "vocab"], rows, align_right_from=2))
    return 0


def _short_aliases(names: list[str], most: int = 3) -> list[str]:
    """The aliases people type (no org/ prefix), shortest first."""
    return sorted((n for n in names if "/" not in n), key=len)[:most]


def run_gpus(args) -> int:
    from vramplan.gpus import list_gpus

    gpus = list_gpus()
    if args.names:
        print("\n".join(name for g in gpus for name in [g.key, *g.aliases]))
        return 0
    if args.json:
        print(json.dumps([g.model_dump(mode="json") for g in gpus], indent=2))
        return 0
    rows = [[g.key, g.name, ", ".join(g.aliases[:3]), gib(g.total_memory_bytes), "yes" if g.bf16 else "no"]
            for g in gpus]
    print(table(["key", "name", "aliases", "GiB", "bf16"], rows, align_right_from=3))
    return 0
