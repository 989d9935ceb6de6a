"""Advice on an absurd micro-batch answers at once: the divisors of the effective batch come from
its prime factors (bounded trial division), and the batch split is found by bisection."""
from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from vramplan.advice import divisors_below, advise
from vramplan.catalog import get_model
from vramplan.estimate import make_run
from vramplan.gpus import get_gpu


def test_divisors_of_two_to_the_31_come_back_within_5_seconds():
    code = "from vramplan.advice import divisors_below as d; print(len(d(2**31, 2**31)), d(3 * 2**31, 2**31)[0])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=5)
    assert result.stdout.split() == ["31", str(3 * 2**29)]


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 5000), below=st.integers(1, 5001))
def test_divisors_below_are_every_divisor_under_the_bound_largest_first(total, below):
    assert divisors_below(total, below) == [d for d in range(min(total, below - 1), 0, -1) if total % d == 0]


def test_a_large_prime_effective_batch_is_factored_within_5_seconds():
    # 2**61 - 1 is a Mersenne prime: trial division stops at 2**20 and keeps it as one factor
    code = "from vramplan.advice import divisors_below as d; p = 2**61 - 1; print(d(p * 6, p))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=5)
    assert result.stdout.strip() == "[6, 3, 2, 1]"


def test_advice_for_batch_2_to_the_20_keeps_the_effective_batch_and_fits():
    model, gpu = get_model("13b"), get_gpu("t4")
    first = advise(model, gpu, make_run(micro_batch_size=2**20, seq_len=512))[0]
    assert first.kinds == ("batch",) and first.fits
    assert first.run.micro_batch_size * first.run.grad_accum_steps == 2**20
