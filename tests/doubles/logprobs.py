"""TEST DOUBLE of an engine's `option_logprobs`. Not a model.

A real model's log-probabilities cannot be known in advance, so the tests of
both-orders scoring use this engine: it reads the two options out of the
question ("A. ..." and "B. ..." lines, as `generator.evals` writes them) and
answers with log-probabilities fixed per action text, plus an optional bonus
for whichever action is shown as A (a position bias). Every figure a report
derives from it can be computed by hand. An action it was not told about is
invisible (-inf), as a letter outside a server's top log-probabilities is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from generator.engines import ChoiceRequest, ModelInfo

_OPTION = re.compile(r"^([AB])\. (.*)$", re.M)


class KnownLogprobsEngine:
    name = "known-logprobs-double"

    def __init__(self, action_logprobs: dict[str, float], a_bonus: float = 0.0) -> None:
        self.action_logprobs = action_logprobs
        self.a_bonus = a_bonus
        self.requests: list[ChoiceRequest] = []

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(name="known-logprobs", sha256="0" * 64)

    def option_logprobs(self, requests: Sequence[ChoiceRequest]) -> list[dict[str, float]]:
        answers = []
        for request in requests:
            self.requests.append(request)
            shown = dict(_OPTION.findall(request.prompt))
            answer = {
                letter: self.action_logprobs.get(shown[letter], float("-inf"))
                for letter in request.options
            }
            answer["A"] += self.a_bonus
            answers.append(answer)
        return answers

    def close(self) -> None:
        pass
