"""TEST DOUBLE of `vllm.model_executor.layers.batch_invariant`: like vLLM, it reads
`VLLM_BATCH_INVARIANT` once, when the module is first imported, so setting the
variable after vLLM was imported changes nothing."""

from __future__ import annotations

import os


def _read_vllm_batch_invariant() -> bool:
    value = os.getenv("VLLM_BATCH_INVARIANT", "0")
    try:
        return int(value) != 0
    except ValueError:
        return False


VLLM_BATCH_INVARIANT: bool = _read_vllm_batch_invariant()


def vllm_is_batch_invariant() -> bool:
    return VLLM_BATCH_INVARIANT
