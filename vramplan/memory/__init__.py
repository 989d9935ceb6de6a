"""The analytic memory model: small pure functions, one per component (no torch, no I/O).

Every function takes plain ints or numpy arrays for the sizes a sweep varies
(micro-batch, sequence length, LoRA rank) and returns bytes of the same shape.
"""
