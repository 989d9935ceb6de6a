"""The analytic FSDP2 per-rank model against torch's real `fully_shard` on a fake process group
(vramplan.simulate.distributed), phase by phase, within the 3% the benchmark holds for every dense
catalog model (benchmarks/distributed_agreement.py): an untied and a tied model, full and LoRA."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramplan.catalog import get_model  # noqa: E402
from vramplan.estimate import make_parallel, make_run, plan_ranks  # noqa: E402
from vramplan.gpus import get_gpu  # noqa: E402
from vramplan.phases import ANALYTIC_PHASES_OF_SIMULATED  # noqa: E402
from vramplan.simulate.distributed import simulate_ranks  # noqa: E402

TARGET = 0.03


@pytest.mark.parametrize("name", ["tinyllama-1.1b", "qwen2.5-0.5b"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_every_phase_within_three_percent(name, method):
    model, gpu = get_model(name), get_gpu("h200")
    run = make_run(method=method, gradient_checkpointing=True, micro_batch_size=1, seq_len=512)
    parallel = make_parallel(gpus=4, strategy="fsdp", fsdp_version=2, fsdp_wrap="decoder-layer")
    simulated = simulate_ranks(model, gpu, run, parallel).worst_rank
    analytic = plan_ranks(model, gpu, run, parallel=parallel).worst_rank.breakdown.phase_peaks
    for phase, peak in simulated.phase_peaks.items():
        if phase not in ANALYTIC_PHASES_OF_SIMULATED:
            continue
        planned = max(analytic[a] for a in ANALYTIC_PHASES_OF_SIMULATED[phase] if a in analytic)
        assert abs(planned - peak) <= TARGET * peak, (phase, planned / 2**20, peak / 2**20)
