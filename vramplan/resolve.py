"""`--model` and `--gpu` text -> specs. Models: a local path, then the local HF cache,
then the bundled catalog (whose errors suggest close names)."""
from __future__ import annotations

from vramplan.catalog import get_model
from vramplan.errors import InputError
from vramplan.gpus import get_gpu as resolve_gpu
from vramplan.paths import exists, user_path
from vramplan.sources.local import LocalModel, load_from_hf_cache, load_local
from vramplan.specs.model import ModelSpec


def resolve_local(text: str) -> LocalModel | None:
    """The local model `text` names (path or cached HF repo id), or None if it names none."""
    path = user_path(text, "model")
    if exists(path):
        return load_local(path)
    if text.endswith(".json") or text.startswith((".", "~", "/")):
        raise InputError("model", f"no such file or folder: {text}")
    return load_from_hf_cache(text)


def resolve_model(text: str) -> ModelSpec:
    """The ModelSpec for `--model`: path, HF cache repo id, or catalog name."""
    text = text.strip()
    if not text:
        raise InputError("model", "give a catalog name, a config.json, a model folder or an HF repo id")
    local = resolve_local(text)
    if not local:
        try:
            return get_model(text)
        except InputError as exc:
            if "/" not in text or not exc.message.startswith("unknown"):
                raise
            # a repo id that is neither cached nor in the catalog: say how to plan it anyway
            raise InputError("model", f"{exc.message}; '{text}' is not in the local HF cache either: "
                                      "download its config.json and pass that path") from None
    return local.spec.model_copy(update={
        "stored_weight_format": local.weight_format or "",
        "checkpoint_parameters": local.parameter_count or 0,
    })


__all__ = ["resolve_model", "resolve_local", "resolve_gpu"]
