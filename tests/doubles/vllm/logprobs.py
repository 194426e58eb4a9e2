"""TEST DOUBLE of `vllm.logprobs`: the `Logprob` entry vLLM returns per token, as in
vLLM's vllm/logprobs.py (a dataclass of the log-probability, the vocabulary rank and
the decoded token text)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None
