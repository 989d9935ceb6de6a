"""Per-rank planning for more than one GPU: what each rank of a DDP, FSDP, DeepSpeed ZeRO or
tensor-parallel run holds, and what its node's host RAM holds (`plan_ranks`)."""
