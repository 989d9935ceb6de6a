"""How much host RAM `from_pretrained` takes per process: anonymous memory vs the mmap'd checkpoint.

Writes a 267M-parameter bf16 Llama (534 MiB) to a temporary folder, then loads it in N processes
under torchrun (gloo, CPU) with accelerate's FSDP environment, touches every weight, and prints
each rank's RssAnon / RssFile growth from /proc/self/status. On transformers 5.24 the weights
stay views of the mmap'd safetensors file (RssFile grows by the model, RssAnon does not), so the
node's page cache holds one copy that every rank shares (vramplan.stack.rules.checkpoint_stays_mapped).

    python benchmarks/checkpoint_load_rss.py --ranks 2      # about 30 s on 2 cores
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

LOADER = r'''
import sys, torch, torch.distributed as dist
dist.init_process_group("gloo")
def mem():
    return {k: int(v.split()[0]) // 1024 for k, v in (l.split(":") for l in open("/proc/self/status"))
            if k in ("RssAnon", "RssFile")}
from transformers import AutoModelForCausalLM
before = mem()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
touched = sum(float(p.float().sum()) for p in model.parameters())
after = mem()
print(f"rank {dist.get_rank()}: load dtype {sys.argv[2]}: RssAnon +{after['RssAnon'] - before['RssAnon']} MiB, "
      f"RssFile +{after['RssFile'] - before['RssFile']} MiB", flush=True)
dist.destroy_process_group()
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args()
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory() as folder:
        config = LlamaConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=12, num_attention_heads=8,
                             num_key_value_heads=8, vocab_size=32000)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        size = sum(p.numel() for p in model.parameters()) * 2 / 2**20
        model.save_pretrained(os.path.join(folder, "model"))
        loader = os.path.join(folder, "load.py")
        with open(loader, "w") as handle:
            handle.write(LOADER)
        print(f"transformers {transformers.__version__}, torch {torch.__version__}: bf16 checkpoint of {size:.0f} MiB, "
              f"{args.ranks} ranks")
        env = {**os.environ, "ACCELERATE_USE_FSDP": "1", "FSDP_CPU_RAM_EFFICIENT_LOADING": "1"}
        for dtype in ("bfloat16", "float32"):
            result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks),
                                     loader, os.path.join(folder, "model"), dtype], env=env, capture_output=True, text=True)
            print("\n".join(sorted(line for line in result.stdout.splitlines() if line.startswith("rank "))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
