"""Software-stack profiles: the library versions a plan assumes, the version-keyed rules that change
memory, and the framework recipes (pure Python; reads package metadata, imports none of the libraries).

- `profile`: `--stack auto|current|pkg=ver,...` -> Stack (installed versions via importlib.metadata).
- `version`: Version, a release number with range comparison.
- `rules`: one sourced rule per behaviour (loss upcast, bnb ctx-held inputs, checkpointing default,
  Trainer default optimizer, bnb load dtype) -> StackBehaviour.
- `recipes`: `--recipe hf-trainer|trl-sft|llama-factory|unsloth|axolotl|torchtune` -> RunConfig knobs.
"""
from vramplan.stack.profile import CURRENT_RELEASES, PACKAGES, STACK_ENV, Stack, resolve_stack
from vramplan.stack.rules import CURRENT_BEHAVIOUR, StackBehaviour, stack_behaviour
from vramplan.stack.version import Version

__all__ = ["CURRENT_BEHAVIOUR", "CURRENT_RELEASES", "PACKAGES", "STACK_ENV", "Stack", "StackBehaviour", "Version",
           "resolve_stack", "stack_behaviour"]
