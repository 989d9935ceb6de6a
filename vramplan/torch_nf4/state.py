"""QuantState: what a 4-bit weight needs besides its packed codes, in bitsandbytes' layout.

Checkpoint keys (relative to the weight's own key, as bitsandbytes' `QuantState.as_dict(packed=True)`
writes them): `absmax`, `quant_map`, `nested_absmax`, `nested_quant_map` and
`quant_state.bitsandbytes__{nf4,fp4}` — a uint8 tensor holding UTF-8 JSON with quant_type,
blocksize, dtype, shape and, when nested, nested_blocksize, nested_dtype, nested_offset.
"""
from __future__ import annotations

import dataclasses
import json

import torch

from vramplan.torch_nf4.codes import NESTED_BLOCKSIZE, QUANT_TYPES

_PACKED_KEY = "quant_state.bitsandbytes__"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclasses.dataclass
class QuantState:
    """absmax is fp32 per block, or uint8 codes of (absmax - offset) when double-quantized."""

    absmax: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype  # dtype of the weight before quantization (the default dequant dtype)
    blocksize: int
    quant_type: str
    code: torch.Tensor  # 16 fp32 entries
    offset: torch.Tensor | None = None  # 0-dim fp32: mean of the first-level absmax
    nested_absmax: torch.Tensor | None = None  # fp32 per NESTED_BLOCKSIZE blocks
    nested_code: torch.Tensor | None = None  # 256 fp32 entries (signed dynamic map)
    nested_blocksize: int = NESTED_BLOCKSIZE
    nested_dtype: torch.dtype = torch.float32

    @property
    def nested(self) -> bool:
        return self.nested_absmax is not None

    @property
    def numel(self) -> int:
        return self.shape.numel()

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor the state holds, by checkpoint name (offset included; it is a tensor too)."""
        out = {"absmax": self.absmax, "quant_map": self.code}
        if self.nested:
            out |= {"nested_absmax": self.nested_absmax, "nested_quant_map": self.nested_code, "offset": self.offset}
        return out

    def to(self, device: torch.device | str) -> QuantState:
        moved = {k: v.to(device) for k, v in self.tensors().items()}
        return dataclasses.replace(
            self,
            absmax=moved["absmax"],
            code=moved["quant_map"],
            offset=moved.get("offset"),
            nested_absmax=moved.get("nested_absmax"),
            nested_code=moved.get("nested_quant_map"),
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for a safetensors checkpoint, keyed as bitsandbytes packs them (no prefix)."""
        meta: dict = {
            "quant_type": self.quant_type,
            "blocksize": self.blocksize,
            "dtype": _dtype_name(self.dtype),
            "shape": list(self.shape),
        }
        out = {"absmax": self.absmax, "quant_map": self.code}
        if self.nested:
            out["nested_absmax"] = self.nested_absmax
            out["nested_quant_map"] = self.nested_code.clone()  # unshared, as bitsandbytes does for safetensors
            meta |= {
                "nested_blocksize": self.nested_blocksize,
                "nested_dtype": _dtype_name(self.nested_dtype),
                "nested_offset": self.offset.item(),
            }
        out[_PACKED_KEY + self.quant_type] = torch.tensor(list(json.dumps(meta).encode("utf-8")), dtype=torch.uint8)
        return out

    @classmethod
    def from_dict(cls, tensors: dict[str, torch.Tensor], device: torch.device | str | None = None) -> QuantState:
        """Inverse of `as_dict`; keys may carry a prefix such as `weight.` (it is ignored)."""
        packed = {k: v for k, v in tensors.items() if _PACKED_KEY in k}
        if len(packed) != 1:
            raise ValueError(f"expected exactly one '{_PACKED_KEY}{{nf4,fp4}}' entry, found {sorted(packed) or 'none'}")
        ((packed_key, meta_tensor),) = packed.items()
        meta = json.loads(bytes(meta_tensor.cpu().tolist()).decode("utf-8"))
        if meta["quant_type"] not in QUANT_TYPES or not packed_key.endswith(meta["quant_type"]):
            raise ValueError(f"unsupported 4-bit quant state {packed_key!r} with quant_type {meta['quant_type']!r}")
        by_name = {k.split(".")[-1]: v.to(device) if device is not None else v for k, v in tensors.items()}
        nested = "nested_absmax" in by_name
        absmax = by_name["absmax"]
        return cls(
            absmax=absmax,
            shape=torch.Size(meta["shape"]),
            dtype=getattr(torch, meta["dtype"]),
            blocksize=int(meta["blocksize"]),
            quant_type=meta["quant_type"],
            code=by_name["quant_map"],
            offset=torch.tensor(float(meta["nested_offset"]), device=absmax.device) if nested else None,
            nested_absmax=by_name.get("nested_absmax"),
            nested_code=by_name.get("nested_quant_map"),
            nested_blocksize=int(meta.get("nested_blocksize", NESTED_BLOCKSIZE)),
            nested_dtype=getattr(torch, meta.get("nested_dtype", "float32")),
        )
