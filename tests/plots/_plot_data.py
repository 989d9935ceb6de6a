"""Helpers for the plot and report tests: PNG sizes and SYNTHETIC validation CSVs (made-up numbers)."""
from __future__ import annotations

import csv
import struct

SYNTHETIC_COLUMNS = ("model", "method", "device_name", "seq_len", "predicted_peak_bytes",
                     "measured_peak_bytes", "status", "source")
GIB = 2**30


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def write_synthetic_results(path, rows, columns=SYNTHETIC_COLUMNS):
    """A SYNTHETIC validation CSV (made-up numbers for tests; not a measurement)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
    return path


SYNTHETIC_ROWS = [
    # model, method, device, seq, predicted, measured, status, source
    ("llama-3.2-1b", "qlora", "NVIDIA H100 80GB HBM3", 512, 3.0 * GIB, 3.1 * GIB, "ok", "synthetic (test)"),
    ("llama-3.2-1b", "lora", "NVIDIA H100 80GB HBM3", 512, 4.0 * GIB, 3.5 * GIB, "ok", "synthetic (test)"),
    ("llama-2-7b", "qlora", "NVIDIA H100 80GB HBM3", 1024, 6.0 * GIB, 6.2 * GIB, "ok", "synthetic (test)"),
    ("llama-2-7b", "full", "NVIDIA H100 80GB HBM3", 1024, 90.0 * GIB, "", "oom", "synthetic (test)"),
]
