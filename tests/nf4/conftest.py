"""NF4 tests run on CPU: the Triton kernel runs in the interpreter, which must be switched on
before `vramplan.torch_nf4.dequantize_triton` defines the kernel, i.e. here, before any test module
imports it. On a machine with CUDA the kernel is compiled for real instead."""
import importlib.util
import os

import pytest

HAS_TORCH = importlib.util.find_spec("torch") is not None
if HAS_TORCH:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config, items):
    if HAS_TORCH and torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
