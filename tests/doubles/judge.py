"""TEST DOUBLE of a strong judge model. Not a model.

A judge that passes the validation set needs a model far larger than this
machine can run (the bundled 135M model fails it). This engine implements the
project's Engine protocol and answers judge prompts as a perfect judge would
on the labelled passages: `SCORE: 9` for aligned or good passages and
`SCORE: 2` for the others; for any other document it gives `reply_otherwise`.
It lets the tests exercise what a build does with a reliable judge.
"""

from __future__ import annotations

from collections.abc import Sequence

from filters.judges import validation_set
from generator.engines import Completion, ModelInfo, Request


class OracleJudgeEngine:
    name = "oracle-double"
    default_chunk_size = 64

    def __init__(self, reply_otherwise: str = "SCORE: 2") -> None:
        self.reply_otherwise = reply_otherwise
        self.labels = {text: good for items in validation_set().values() for text, good in items}
        self.prompts: list[str] = []

    @property
    def model(self) -> ModelInfo:
        return ModelInfo(name="oracle", sha256="0" * 64)

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        replies = []
        for request in requests:
            self.prompts.append(request.prompt)
            document = request.prompt.split("<document>\n", 1)[1].rsplit("\n</document>", 1)[0]
            if document in self.labels:
                reply = "SCORE: 9" if self.labels[document] else "SCORE: 2"
            else:
                reply = self.reply_otherwise
            replies.append(Completion(text=reply, n_tokens=3, finish_reason="stop"))
        return replies

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def close(self) -> None:
        pass
