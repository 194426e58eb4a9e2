"""Deduplication stages."""

from __future__ import annotations

import hashlib
import re

from filters.stage import Drop, Stage
from generator.records import Document

_WS = re.compile(r"\s+")


class ExactDedup(Stage):
    """Keep the first document of each text (case and whitespace ignored), in build order.

    Holds one 16-byte digest per kept document: about 100 MB for a million
    documents with Python's set overhead, which is why it hashes rather than
    keeping texts.
    """

    name = "exact-dedup"

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[bytes] = set()

    def process(self, doc: Document) -> Document | Drop:
        key = hashlib.blake2b(_WS.sub(" ", doc.text).strip().lower().encode(), digest_size=16)
        digest = key.digest()
        if digest in self._seen:
            return Drop("duplicate")
        self._seen.add(digest)
        return doc
