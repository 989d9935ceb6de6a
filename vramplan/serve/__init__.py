"""Serving plans for inference engines, one module per engine.

Each engine module has `ENGINE` (its name on the command line), `add_arguments(parser)` (its own flags,
with the engine's names), and `plan_from_args(model, gpu, args)`, returning a frozen plan with `.fits`,
`.to_json()` and `.render_text()`. `vramplan.cli.serve` keeps the registry of engines.
"""
