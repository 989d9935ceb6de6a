"""Where a ModelSpec can come from besides the catalog: an HF `config.json`, a
safetensors header, a local model folder or the local HF cache (offline only).

Every file here is untrusted input: parsed as JSON or fixed binary layout, never
executed or unpickled; every problem is an InputError naming the file.
"""
