"""`explain` prints arithmetic that multiplies out: every term's factors give its bytes, the terms
give each component, the components give the peak and the required total - to the byte - for every
catalog model and method, as printed and as `--json` carries it."""
from __future__ import annotations

import json
import math
import re

import pytest

from vramplan.catalog import list_models
from vramplan.cli.main import main
from vramplan.memory.xp import allocation_bytes

CASES = [(method, checkpointing) for method in ("qlora", "lora", "full") for checkpointing in (True, False)]
CASES.append(("inference", None))
MODELS = [model.name for model in list_models()]

COMPONENT = re.compile(r"^(\S.*) = [\d.]+ GiB \(([\d,]+) B\)$")
PRODUCT = re.compile(r"^ {8}= (.*?)( \(each tensor rounded up to 512 B\)| \(rounded down\))? = (-?[\d,]+) B$")


def _explain(capsys, model, method, checkpointing, *extra):
    argv = ["explain", "--model", model, "--gpu", "a100-80g", "--method", method, "--seq", "1024", *extra]
    if checkpointing is not None:
        argv.append("--gradient-checkpointing" if checkpointing else "--no-gradient-checkpointing")
    main(argv)
    return capsys.readouterr().out


def _factor_values(text: str) -> list:
    """'40 tensors x 13,107,200 B each' -> [40, 13107200]: the leading number of each factor."""
    values = []
    for factor in text.split(" x "):
        number = factor.split(" ", 1)[0].replace(",", "")
        values.append(float(number) if "." in number or "e" in number else int(number))
    return values


def _multiply(values, rounding: str):
    if "512" in rounding:
        return values[0] * allocation_bytes(math.prod(values[1:]))
    product = math.prod(values)
    return int(product) if rounding else product


def parse_explain(out: str) -> tuple[dict[str, tuple[int, list[int]]], int, int]:
    """({label: (component bytes, [term bytes])}, peak allocated, required) from the human output."""
    components, label = {}, None
    for line in out.splitlines():
        if match := COMPONENT.match(line):
            label = match.group(1)
            components[label] = (int(match.group(2).replace(",", "")), [])
        elif match := PRODUCT.match(line):
            printed = int(match.group(3).replace(",", ""))
            values = _factor_values(match.group(1))
            assert _multiply(values, match.group(2) or "") == printed, line
            components[label][1].append(printed)
    totals = re.search(r"peak allocated = ([\d,]+) B; .* required ([\d,]+) B", out)
    return components, int(totals.group(1).replace(",", "")), int(totals.group(2).replace(",", ""))


@pytest.mark.parametrize("method, checkpointing", CASES)
@pytest.mark.parametrize("model", MODELS)
def test_explain_terms_multiply_out_and_add_up_to_components_and_peak(capsys, model, method, checkpointing):
    components, peak, required = parse_explain(_explain(capsys, model, method, checkpointing))
    assert components
    for label, (component_bytes, term_bytes) in components.items():
        assert term_bytes and sum(term_bytes) == component_bytes, label
    outside = ("allocator reserve (reserved - allocated)", "CUDA context (outside PyTorch)")
    assert sum(value for label, (value, _) in components.items() if label not in outside) == peak
    assert sum(value for value, _ in components.values()) == required


@pytest.mark.parametrize("model, method, extra", [
    ("13b", "qlora", ()), ("gemma-2-9b", "inference", ("--seq", "4096")), ("gemma-2-2b", "full", ()),
    ("mixtral-8x7b", "qlora", ()), ("llama-3.1-8b", "lora", ("--loss-impl", "chunked", "--optimizer", "adamw_8bit")),
    ("7b", "inference", ("--weight-format", "gguf-q4_k_m")),
])
def test_explain_json_and_human_output_show_the_same_terms(capsys, model, method, extra):
    human, _peak, required = parse_explain(_explain(capsys, model, method, None if method == "inference" else True,
                                                    *extra))
    data = json.loads(_explain(capsys, model, method, None if method == "inference" else True, *extra, "--json"))
    assert data["required_bytes"] == required
    from_json = {row["label"]: (row["bytes"], [term["bytes"] for term in row["terms"]]) for row in data["components"]}
    assert from_json == human
    for row in data["components"]:
        for term in row["terms"]:
            values = [value for _label, value in term["factors"]]
            assert _multiply(values, {"512 B blocks": "512", "floor": "floor"}.get(term["rounding"], "")) \
                == term["bytes"], term


def test_fit_json_carries_the_peak_terms_without_dropping_fields(capsys):
    main(["fit", "--model", "13b", "--gpu", "t4", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert {"activations", "logits_loss", "peak_allocated_bytes", "phase_peaks"} <= set(data)
    for name, terms in data["terms"].items():
        assert sum(term["bytes"] for term in terms) == data[name], name
