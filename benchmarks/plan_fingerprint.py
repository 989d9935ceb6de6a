"""Every plan number over a fixed grid, to show a refactor changed none of them.

Plans every catalog model on t4 / a100-80g / rtx4090 / h200 under 14 run variants (QLoRA with and
without checkpointing, 8-bit, paged and Adafactor optimizers, LoRA, full fine-tuning mixed and pure,
chunked loss, no k-bit preparation, int8, inference with bf16 and fp8 caches) and writes one JSON
line per plan (the Breakdown without its terms, and its components; an InputError as its message).
`--compare OLD NEW` prints how many plans differ, and in which variants.

    python benchmarks/plan_fingerprint.py /tmp/after.jsonl            # about 20 s on 2 cores
    python benchmarks/plan_fingerprint.py --compare /tmp/before.jsonl /tmp/after.jsonl
"""
from __future__ import annotations

import argparse
import collections
import json

GPUS = ("t4", "a100-80g", "rtx4090", "h200")
VARIANTS = (
    dict(method="qlora"), dict(method="qlora", gradient_checkpointing=False, seq_len=2048, micro_batch_size=2),
    dict(method="qlora", optimizer="paged_adamw_8bit", lora_rank=64), dict(method="qlora", optimizer="adamw_8bit", lora_rank=8),
    dict(method="lora"), dict(method="lora", optimizer="adafactor", seq_len=1024),
    dict(method="full"), dict(method="full", full_precision="pure", optimizer="adamw_8bit"),
    dict(method="full", optimizer="adafactor", grad_accum_steps=4), dict(method="inference", seq_len=4096, micro_batch_size=4),
    dict(method="qlora", loss_impl="chunked", seq_len=4096), dict(method="qlora", kbit_prep=False, attention="eager"),
    dict(method="qlora", weight_format="int8"), dict(method="inference", kv_cache_dtype="fp8"),
)


def write(path: str) -> int:
    from vramplan.catalog import get_model, list_models
    from vramplan.errors import InputError
    from vramplan.estimate import make_run, plan
    from vramplan.gpus import get_gpu

    count = 0
    with open(path, "w") as out:
        for entry in list_models():
            model = get_model(entry.name)
            for gpu_key in GPUS:
                gpu = get_gpu(gpu_key)
                for variant in VARIANTS:
                    try:
                        breakdown = plan(model, gpu, make_run(**variant))
                        record = {k: v for k, v in breakdown.model_dump(mode="json").items() if k != "terms"}
                        record["components"] = breakdown.components()
                    except InputError as exc:
                        record = {"error": f"{type(exc).__name__}: {exc}"}
                    out.write(json.dumps({"model": entry.name, "gpu": gpu_key, "v": variant, **record}, sort_keys=True) + "\n")
                    count += 1
    return count


def _same(old, new) -> bool:
    """Equal, where a dict compares only the keys both have (a newer plan may add fields)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(_same(old[key], new[key]) for key in old.keys() & new.keys())
    return old == new


def compare(old_path: str, new_path: str) -> None:
    old = [json.loads(line) for line in open(old_path)]
    new = [json.loads(line) for line in open(new_path)]
    differ = [a for a, b in zip(old, new) if not _same(a, b)]
    print(f"{len(old)} / {len(new)} plans; {len(differ)} differ; keys added: {sorted(set(new[0]) - set(old[0]))}")
    for variant, count in collections.Counter(json.dumps(a["v"]) for a in differ).most_common():
        print(f"  {count} in {variant}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", help="JSON-lines file to write")
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    args = parser.parse_args()
    if args.compare:
        compare(*args.compare)
    elif args.out:
        print(f"{write(args.out)} plans written to {args.out}")
    else:
        parser.error("give a file to write, or --compare OLD NEW")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
