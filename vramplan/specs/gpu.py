"""GPUSpec: one accelerator as `gpu_profiles/*.toml` describes it."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vramplan.specs.bounds import GPU_BOUNDS, bound_validators
from vramplan.text import has_unsafe_characters


class GPUSpec(BaseModel):
    # strict: a user's TOML saying `total_memory_bytes = true` or `bf16 = 1` is an error, not a
    # 1-byte GPU (bool is an int in Python); ints still pass for float fields.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    key: str = Field(description="short name used on the command line, e.g. 't4'")
    name: str = Field(description="the device name as torch.cuda.get_device_name() reports it")
    vendor: Literal["nvidia", "amd", "apple", "custom"] = "nvidia"
    total_memory_bytes: int = Field(gt=0, description="torch.cuda.get_device_properties().total_memory")
    bf16: bool = True
    fp8: bool = False
    memory_bandwidth_gbps: float = Field(default=0.0, ge=0)
    compute_capability: str = ""
    cuda_context_bytes: int = Field(
        default=500 * 2**20, ge=0,
        description="driver context + CUDA/cuBLAS modules: in nvidia-smi, not in max_memory_allocated",
    )
    cublas_workspace_bytes: int = Field(
        default=8 * 2**20 + 128 * 2**10, ge=0,
        description="cuBLAS workspace from the caching allocator (CUBLAS_WORKSPACE_CONFIG default)",
    )
    unified_memory: bool = Field(default=False, description="memory shared with the CPU (Apple M-series)")
    usable_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="share of total memory one process may allocate (Apple: Metal's working-set limit)",
    )
    aliases: tuple[str, ...] = Field(default=(), strict=False, description="a TOML list of other names")
    source: str = ""
    notes: str = ""
    size_reading: str = Field(default="", description="how a size given as the GPU was read (a plan note)")

    _not_bool, _within_bounds = bound_validators(GPU_BOUNDS)  # bools refused, each field at most its bound

    @field_validator("key", "name", "compute_capability", "aliases", "source", "notes", "size_reading")
    @classmethod
    def _printable(cls, value):
        """Names are printed in plans and tables: no newlines, no terminal escape sequences."""
        for text in (value if isinstance(value, tuple) else (value,)):
            if has_unsafe_characters(text):
                raise ValueError("must be printable text: no control characters or terminal escapes")
        return value

    @property
    def capacity_bytes(self) -> int:
        """Bytes a training process can use, context included."""
        return int(self.total_memory_bytes * self.usable_fraction)
