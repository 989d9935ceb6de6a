"""A model on this machine: a config.json, a model folder, or a repo in the local HF cache.

Offline only: the HF cache is read as the folder layout huggingface_hub writes
(`models--org--name/refs/main` holds a commit; `snapshots/<commit>/config.json`);
nothing is ever fetched.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from vramplan.errors import InputError
from vramplan.paths import model_root, regular_file_inside, user_path
from vramplan.sources.json_file import read_bounded, read_json_object
from vramplan.sources.config_json import spec_from_config, weight_format_from_config
from vramplan.sources.safetensors_header import Checkpoint, read_checkpoint
from vramplan.specs.model import ModelSpec

MAX_CONFIG_BYTES = 10_000_000
MAX_REF_BYTES = 1024  # refs/main holds one commit hash (40 hex digits and a newline)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class LocalModel:
    spec: ModelSpec
    weight_format: str | None = None  # pre-quantized format: config.json or the checkpoint
    checkpoint: Checkpoint | None = None

    @property
    def parameter_count(self) -> int | None:
        return self.checkpoint.parameter_count() if self.checkpoint else None


def hf_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps models: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]).expanduser() / "hub"]
    return [Path("~/.cache/huggingface/hub").expanduser()]


def find_in_hf_cache(repo_id: str) -> Path | None:
    """The snapshot folder of `repo_id` in the local HF cache (refs/main, else newest)."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        return None
    for cache in hf_cache_dirs():
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            commit = read_bounded(ref, MAX_REF_BYTES, "refs/main commit hash").decode("ascii", "replace").strip()
            if re.fullmatch(r"[0-9a-fA-F]{7,64}", commit) and (snapshots / commit / "config.json").is_file():
                return snapshots / commit
        candidates = [s for s in snapshots.iterdir() if (s / "config.json").is_file()]
        if candidates:
            return max(candidates, key=lambda s: s.stat().st_mtime)
    return None


def read_config(path: Path) -> dict:
    """Parse a config.json (size-bounded JSON, never executed)."""
    return read_json_object(path, MAX_CONFIG_BYTES, "config.json")


def load_local(path: str | Path, name: str = "") -> LocalModel:
    """A config.json file, or a folder with config.json and optional *.safetensors."""
    path = user_path(str(path), "model")
    folder = path if path.is_dir() else path.parent
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise InputError("model", f"no config.json in {folder}")
    if path.is_dir():
        regular_file_inside(config_path, model_root(folder), str(config_path))
    cfg = read_config(config_path)
    spec = spec_from_config(cfg, name=name or folder.name, origin=str(config_path))
    spec = spec.model_copy(update={"checkpoint_path": str(folder.resolve())})
    checkpoint = None
    if path.is_dir() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.safetensors.index.json"))):
        checkpoint = read_checkpoint(folder)
    weight_format = weight_format_from_config(cfg) or (checkpoint.bnb_4bit_format if checkpoint else None)
    return LocalModel(spec, weight_format, checkpoint)


def load_from_hf_cache(repo_id: str) -> LocalModel | None:
    """The cached model `repo_id`, or None when it is not in the local cache."""
    snapshot = find_in_hf_cache(repo_id)
    if not snapshot:
        return None
    local = load_local(snapshot, name=repo_id)  # from_pretrained finds the repo id in the cache itself
    return replace(local, spec=local.spec.model_copy(update={"checkpoint_path": "", "hf_id": repo_id}))
