"""The bundled model catalog (`models.toml`) and name lookup with "did you mean".

Names match case-insensitively and ignore '-', '_', '.' and spaces, so
`Llama-3.1-8B`, `llama_3_1_8b` and `LLAMA-3.1-8b` are one name. Every model answers to
its catalog key, its `aliases`, its `hf_id` (as pasted from the Hub, `org/` prefix and all)
and the part of `hf_id` after the '/'.

A table's `variants` (e.g. `{ instruct = "meta-llama/Llama-3.1-8B-Instruct" }`) become models
of their own, `<key>-<suffix>`, with the same architecture numbers and their own `hf_id`, so an
instruct model plans and emits its own repository. A variant is an HF id, or a table
`{ hf_id = "...", aliases = [...] }`.
"""
from __future__ import annotations

import difflib
import functools
import re
import tomllib
from importlib import resources

from vramplan.errors import InputError, from_validation_error
from vramplan.families import family_names, get_family
from vramplan.specs.model import ModelSpec

_IGNORED = re.compile(r"[-_.\s]")


def normalize_name(name: str) -> str:
    """The form names are compared in: lower case without '-', '_', '.' or spaces."""
    return _IGNORED.sub("", name.strip().lower())


def lookup(name: str, index: dict[str, str], field: str, kind: str, list_hint: str) -> str:
    """The key that `name` means in `index` (normalized name -> key).

    Unknown names raise InputError with up to three close matches (difflib); a name that is
    the start of several keys or aliases (`llama-2`) is ambiguous and lists them.
    """
    wanted = normalize_name(name)
    if wanted in index:
        return index[wanted]
    starts = _unique(key for n, key in index.items() if wanted and n.startswith(wanted))
    if len(starts) > 1:
        raise InputError(
            field, f"ambiguous {kind} '{name}' could be: {', '.join(starts[:6])} ({list_hint})"
        )
    close = difflib.get_close_matches(wanted, list(index), n=8, cutoff=0.6)
    suggestions = _unique(index[n] for n in close)[:3]
    suggestions = suggestions or starts
    hint = f"; did you mean: {', '.join(suggestions)}? ({list_hint})" if suggestions else f" ({list_hint})"
    raise InputError(field, f"unknown {kind} '{name}'{hint}")


def _unique(keys) -> list[str]:
    return list(dict.fromkeys(keys))


@functools.cache
def _catalog() -> tuple[dict[str, ModelSpec], dict[str, list[str]], dict[str, str]]:
    """Models by key, their aliases, and the normalized-name index. Loaded once."""
    text = resources.files(__package__).joinpath("models.toml").read_text(encoding="utf-8")
    tables = tomllib.loads(text)
    models: dict[str, ModelSpec] = {}
    aliases: dict[str, list[str]] = {}
    index: dict[str, str] = {}
    for key, fields in _expand_variants(tables):
        names = [key, *fields.pop("aliases", [])]
        architecture = fields.get("architecture", ModelSpec.model_fields["architecture"].default)
        if architecture in family_names():  # the family's switches, unless the table sets its own
            fields = {**get_family(architecture).spec_defaults, **fields}
        try:
            spec = ModelSpec(name=key, source="catalog", **fields)
        except Exception as exc:  # pydantic.ValidationError; keep pydantic out of the signature
            raise from_validation_error(exc, prefix=f"models.toml [{key}].") from None
        if spec.hf_id:
            names += [spec.hf_id, spec.hf_id.split("/")[-1]]
        for alias in names:
            normalized = normalize_name(alias)
            owner = index.setdefault(normalized, key)
            if owner != key:
                raise InputError("models.toml", f"name '{alias}' is used by both {owner} and {key}")
        models[key] = spec
        aliases[key] = _unique(n for n in names[1:] if normalize_name(n) != normalize_name(key))
    return models, aliases, index


def _expand_variants(tables: dict) -> list[tuple[str, dict]]:
    """(key, fields) per model: every table, then each of its `variants` right after it."""
    entries = []
    for key, table in tables.items():
        fields = dict(table)
        variants = fields.pop("variants", {})
        entries.append((key, fields))
        if not isinstance(variants, dict):
            raise InputError("models.toml", f"[{key}].variants must be a table of suffix = hf_id")
        for suffix, variant in variants.items():
            variant = {"hf_id": variant} if isinstance(variant, str) else variant
            if (not isinstance(variant, dict) or not isinstance(variant.get("hf_id"), str)
                    or set(variant) - {"hf_id", "aliases"}):
                raise InputError("models.toml", f"[{key}].variants.{suffix}: give an hf_id string "
                                                f"or {{ hf_id = ..., aliases = [...] }}")
            base = {name: value for name, value in fields.items() if name != "aliases"}
            entries.append((f"{key}-{suffix}", {**base, **variant}))
    return entries


def get_model(name: str) -> ModelSpec:
    """The catalog model called `name` (key, alias or HF id; see module docstring)."""
    models, _, index = _catalog()
    key = lookup(name, index, "model", "model", "vramplan models lists all")
    return models[key]


def list_models() -> list[ModelSpec]:
    """Every catalog model, in catalog order."""
    return list(_catalog()[0].values())


def model_aliases() -> dict[str, list[str]]:
    """Catalog key -> the other names it answers to (aliases, HF id)."""
    return {key: list(names) for key, names in _catalog()[1].items()}


__all__ = ["get_model", "list_models", "model_aliases", "normalize_name", "lookup"]
