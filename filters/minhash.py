"""MinHash signatures computed in bulk with numpy, and near-duplicate search with datasketch.

Why not `datasketch.MinHash.update` per shingle: it hashes each shingle with
SHA-1 in Python and updates 128 permutations per call. Here a whole batch of
documents is hashed at once:

1. Text is normalised in C-level string operations (lowercase, punctuation to
   spaces) and encoded to bytes.
2. Word hashes come from one polynomial prefix sum over the batch's bytes
   (arithmetic mod 2**64), so no Python code runs per word.
3. Word n-gram shingle hashes are polynomial combinations of word hashes,
   finished with the splitmix64 mixer, then folded to 32 bits.
4. The permutations are datasketch's own "affine32" scheme,
   h -> a*h + b mod 2**32 with odd a, applied with uint32 arithmetic to a
   (permutations x shingles) block and reduced per document.

The signatures go to datasketch's `MinHashLSH` as `LeanMinHash` objects, and a
candidate counts as a duplicate only if its estimated Jaccard similarity
really reaches the threshold, which keeps precision high near the threshold.

Memory for a million documents: the LSH index (datasketch keeps one bytes key
per band per document) plus 512 bytes of signature per document plus one id
string per document; it grows with the number of documents, never with their
length. bench/dedup.py measured a peak of about 4,050 bytes per document
(3.8 GiB per million documents), almost all of it datasketch's index.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SCHEME = "affine32"
BYTE_BASE = np.uint64(0x100000001B3)  # FNV prime: odd, so it has an inverse mod 2**64
_WORD_BYTES = np.zeros(256, dtype=bool)
_WORD_BYTES[[*range(48, 58), *range(97, 123), *range(128, 256)]] = True
_SPACES = re.compile(r"\s+")


def _punctuation_table() -> dict[int, str]:
    """Every Unicode punctuation and symbol character maps to a space."""
    return {
        cp: " "
        for cp in range(0x10000)  # the Basic Multilingual Plane: every common punctuation mark
        if unicodedata.category(chr(cp))[0] in "PS" or chr(cp) == "_"
    }


_PUNCTUATION: dict[int, str] | None = None


def _spaced(text: str) -> str:
    """Lowercase with punctuation and symbols as spaces (runs of spaces left in)."""
    global _PUNCTUATION
    if _PUNCTUATION is None:
        _PUNCTUATION = _punctuation_table()
    return text.lower().translate(_PUNCTUATION)


def normalize(text: str) -> str:
    """Lowercase, punctuation and symbols to spaces, whitespace collapsed."""
    return _SPACES.sub(" ", _spaced(text)).strip()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: turns weak polynomial hashes into strong ones."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


@dataclass(frozen=True)
class MinHasher:
    """Signatures of `num_perm` 32-bit values over word `ngram`-shingles."""

    num_perm: int = 128
    ngram: int = 5
    seed: int = 1
    block_docs: int = 16

    def __post_init__(self) -> None:
        from datasketch import MinHash

        a, b = MinHash(num_perm=self.num_perm, seed=self.seed, scheme=SCHEME).permutations
        object.__setattr__(self, "_a", a.astype(np.uint32).reshape(-1, 1))
        object.__setattr__(self, "_b", b.astype(np.uint32).reshape(-1, 1))
        rng = np.random.default_rng(self.seed)
        shingle = rng.integers(1, 2**63, self.ngram, dtype=np.uint64) | np.uint64(1)
        object.__setattr__(self, "_shingle_weights", shingle)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """A (len(texts), num_perm) uint32 array; row i is text i's signature."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for start in range(0, len(texts), self.block_docs):
            block = texts[start : start + self.block_docs]
            out[start : start + len(block)] = self._block(block)
        return out

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """32-bit shingle hashes of a batch, concatenated, and each document's first index."""
        encoded = [_spaced(t).encode("utf-8") for t in texts]
        data = np.frombuffer(b" ".join(encoded) + b" ", dtype=np.uint8)
        doc_of_byte = np.repeat(np.arange(len(encoded)), [len(e) + 1 for e in encoded])
        is_word = _WORD_BYTES[data]
        # word boundaries: starts where a word byte follows a non-word byte
        edges = np.diff(np.concatenate(([False], is_word, [False])).astype(np.int8))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        word_hashes = self._word_hashes(data, starts, ends)
        word_doc = doc_of_byte[starts]
        return self._shingles(word_hashes, word_doc, len(texts))

    def _word_hashes(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        n = data.size
        powers = np.empty(n + 1, dtype=np.uint64)
        powers[0] = 1
        with np.errstate(over="ignore"):
            np.cumprod(np.full(n, BYTE_BASE, dtype=np.uint64), out=powers[1:])
            prefix = np.zeros(n + 1, dtype=np.uint64)
            np.cumsum(data.astype(np.uint64) * powers[:n], out=prefix[1:])
            inverse = np.uint64(pow(int(BYTE_BASE), -1, 1 << 64))
            inv_powers = _powers(inverse, int(starts.max()) + 1 if starts.size else 1)
            raw = (prefix[ends] - prefix[starts]) * inv_powers[starts]
            raw += (ends - starts).astype(np.uint64)  # length in, so "ab"+"c" != "a"+"bc"
        return _mix64(raw)

    def _shingles(
        self, words: np.ndarray, word_doc: np.ndarray, n_docs: int
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.ngram
        counts = np.bincount(word_doc, minlength=n_docs)
        doc_end = np.cumsum(counts)
        total = words.size
        if total >= n:
            with np.errstate(over="ignore"):
                combined = words[: total - n + 1] * self._shingle_weights[0]
                for k in range(1, n):
                    combined += words[k : total - n + 1 + k] * self._shingle_weights[k]
            position = np.arange(total - n + 1)
            valid = position + n <= doc_end[word_doc[: total - n + 1]]
            hashes, owners = combined[valid], word_doc[: total - n + 1][valid]
        else:
            hashes, owners = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.intp)
        # Documents shorter than one shingle are a single shingle of all their words.
        short = np.flatnonzero((counts < n) & (counts > 0))
        if short.size:
            extra = np.array(
                [self._whole(words[doc_end[d] - counts[d] : doc_end[d]]) for d in short],
                dtype=np.uint64,
            )
            hashes = np.concatenate([hashes, extra])
            owners = np.concatenate([owners, short])
            order = np.argsort(owners, kind="stable")
            hashes, owners = hashes[order], owners[order]
        folded = (_mix64(hashes.copy()) >> np.uint64(32)).astype(np.uint32)
        first = np.searchsorted(owners, np.arange(n_docs))
        return folded, first

    def _whole(self, words: np.ndarray) -> int:
        with np.errstate(over="ignore"):
            return int((words * self._shingle_weights[: words.size]).sum(dtype=np.uint64))

    def _block(self, texts: Sequence[str]) -> np.ndarray:
        hashes, first = self.shingle_hashes(texts)
        signature = np.full((len(texts), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        if hashes.size == 0:
            return signature
        # (permutations, shingles): each document's shingles are contiguous along axis 1,
        # so the per-document minimum is a fast reduceat over contiguous rows.
        permuted = self._a * hashes  # uint32 arithmetic wraps: this is the mod 2**32
        permuted += self._b
        present = np.flatnonzero(np.diff(np.append(first, hashes.size)) > 0)
        signature[present] = np.minimum.reduceat(permuted, first[present], axis=1).T
        return signature


def _powers(base: np.uint64, count: int) -> np.ndarray:
    powers = np.empty(count, dtype=np.uint64)
    powers[0] = 1
    if count > 1:
        with np.errstate(over="ignore"):
            np.cumprod(np.full(count - 1, base, dtype=np.uint64), out=powers[1:])
    return powers


def jaccard_estimate(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / a.size


class NearDuplicateIndex:
    """Clusters documents in insertion order; the first of each cluster is the one kept.

    `add(key, signature)` returns None for a document unlike every earlier one,
    or the key of the earliest earlier document it duplicates (estimated
    Jaccard >= threshold). Duplicates are indexed too, so a document close to
    a dropped one still joins that cluster: clusters are transitive, and each
    dropped document names the document it actually resembles. Keys need not
    be unique: the index numbers documents itself.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128) -> None:
        from datasketch import MinHashLSH

        self.threshold = threshold
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.keys: list[str] = []
        self.signatures: list[np.ndarray] = []

    def add(self, key: str, signature: np.ndarray) -> str | None:
        from datasketch import LeanMinHash

        sketch = LeanMinHash(seed=1, hashvalues=signature, scheme=SCHEME)
        matches = [
            number
            for number in self.lsh.query(sketch)
            if jaccard_estimate(self.signatures[number], signature) >= self.threshold
        ]
        self.lsh.insert(len(self.keys), sketch, check_duplication=False)
        self.keys.append(key)
        self.signatures.append(signature)
        return self.keys[min(matches)] if matches else None


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """The (bands, rows per band) that datasketch's `MinHashLSH` picks for a threshold
    (equal weights on false positives and false negatives), so band-based candidate
    search finds exactly the candidates its index would. Computed here with Simpson's
    rule rather than through datasketch, whose import pulls in scipy and takes a second
    or more: the merge and `gen dedup` start faster (a test checks the same choice)."""
    low = np.linspace(0.0, threshold, 2049)
    high = np.linspace(threshold, 1.0, 2049)
    errors, choices = [], []
    for b in range(1, num_perm + 1):
        r = np.arange(1, num_perm // b + 1)[:, None]
        false_positive = _simpson(1 - (1 - low**r) ** b, low)
        false_negative = _simpson((1 - high**r) ** b, high)
        errors.extend(0.5 * false_positive + 0.5 * false_negative)
        choices.extend((b, int(k)) for k in r[:, 0])
    return choices[int(np.argmin(errors))]  # the first minimum, as datasketch's loop keeps


def _simpson(values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Composite Simpson integral of each row of `values` over the even grid `x`."""
    h = (x[-1] - x[0]) / (x.size - 1)
    inner = 4 * values[..., 1:-1:2].sum(axis=-1) + 2 * values[..., 2:-1:2].sum(axis=-1)
    return h / 3 * (values[..., 0] + values[..., -1] + inner)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per band of each signature, shape (documents, bands).

    Two documents are LSH candidates when any band's values are all equal; a 64-bit
    hash of the band stands for its values (a false collision only adds a candidate,
    which the similarity check then rejects, so results never change).
    """
    n = signatures.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    weights = _powers(np.uint64(0x9E3779B97F4A7C15), rows)
    with np.errstate(over="ignore"):
        for band in range(bands):
            block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
            out[:, band] = _mix64((block * weights).sum(axis=1, dtype=np.uint64))
    return out


def candidate_pairs(bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (earlier, later) of row positions that share a band value.

    Sorting each band column groups equal values; only groups of two or more make
    pairs, so the work grows with the number of near-duplicates, not with n**2.
    """
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    for column in bands.T:
        order = np.argsort(column, kind="stable")
        values = column[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        sizes = np.diff(np.r_[starts, values.size])
        for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
            members = np.sort(order[start : start + size])
            a, b = np.triu_indices(size, k=1)
            firsts.append(members[a])
            seconds.append(members[b])
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    pairs = np.unique(np.stack([np.concatenate(firsts), np.concatenate(seconds)]), axis=1)
    return pairs[0], pairs[1]


def earliest_duplicates(
    first: np.ndarray, second: np.ndarray, similar: np.ndarray, n: int
) -> np.ndarray:
    """For each row, the earliest earlier row it really resembles, or -1: the rule
    `NearDuplicateIndex.add` applies one document at a time, decided for all at once."""
    result = np.full(n, -1, dtype=np.int64)
    first, second = first[similar], second[similar]
    order = np.lexsort((first, second))  # by later row, then earliest match first
    first, second = first[order], second[order]
    lead = np.r_[True, second[1:] != second[:-1]]
    result[second[lead]] = first[lead]
    return result
