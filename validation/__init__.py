"""GPU validation harness: build the real Hugging Face architecture, train or generate on it,
and record measured against predicted memory (see README.md).

- `cases`: the validation matrix (`matrix.toml`) as `Case`s, and the planner's prediction
  for each exact case (layer override included). No torch.
- `build`: the real model on the device (meta -> layer by layer), quantized, with LoRA.
- `harness`: one case end to end: load, warm-up and measured steps, memory per phase.
- `results`: the CSV schema and the environment columns. No torch at import.
- `report`: the accuracy tables. No torch.
- `run_matrix.py`: the script the GPU session runs.
"""
