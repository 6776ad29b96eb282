"""Fuzzy deduplication: MinHash signatures, LSH band buckets, connected components.

Two stages:

* ``minhash`` (per batch): lower-cases the text, splits it into words and
  hashes every run of ``shingle_size`` consecutive words (word shingles; a
  text shorter than that is one shingle); the signature is, for each of
  ``num_perm`` hash functions ``((a * h + b) mod 2^64) >> 32`` drawn from
  ``seed``, the smallest value over the text's shingles, kept in a
  ``minhash`` column (``num_perm`` uint32). All in numpy, no per-word Python.
* ``lsh`` (a global stage: it sees every signature at once): cuts each
  signature into ``bands`` bands of ``rows_per_band`` values; texts sharing a
  band bucket are candidates, a candidate pair whose signatures agree on at
  least ``threshold`` of their values is an edge, and the connected components
  of those edges are the duplicate clusters. Each cluster keeps its lowest
  source position (input file URL, then row); every other member is removed,
  with the id of the kept document it duplicates and their estimated
  similarity.

The signatures are computed once: ``--set lsh.threshold=0.8`` (or
``lsh.bands``, ``lsh.rows_per_band``) reruns ``lsh`` alone. Changing
``minhash.*`` reruns both.

    winnow run fuzzy_dedup --input 'DIR/*.jsonl' --profile local-cpu
    winnow run fuzzy_dedup --set lsh.threshold=0.8 ...

The run's output holds the kept rows (``minhash`` dropped); the removed rows
(``id``, ``duplicate_of``, ``similarity``, ``file``, ``row``):
``winnow inspect removed``. Why global: components need every edge at once.
It holds the whole corpus (rows and signatures) in memory: banding over
several partitions, then components over the edges alone, needs the kept
rows joined back to the documents, which a pipeline cannot express yet.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage
from winnow.errors import ConfigError
from winnow.grouping import FILE, ROW, GlobalStage, Reduced

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])
SIGNATURE = "minhash"
_EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a text without words
_PERM_BLOCK = 16  # hash functions per pass over the shingles: bounds the temporary array


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer on uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _string_hashes(words: pa.Array, seed: int) -> np.ndarray:
    """A 64-bit hash of each string of ``words`` (non-empty strings), vectorized."""
    words = words.cast(pa.large_string()) if pa.types.is_string(words.type) else words
    n = len(words)
    if n == 0:
        return np.zeros(0, np.uint64)
    offsets = np.frombuffer(words.buffers()[1], np.int64)[words.offset : words.offset + n + 1]
    data = np.frombuffer(words.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    powers = np.ones(int(lengths.max()), np.uint64)
    with np.errstate(over="ignore"):
        powers[1:] = np.uint64(0x100000001B3)
        powers = np.cumprod(powers, dtype=np.uint64)
        terms = (data.astype(np.uint64) + np.uint64(1)) * powers[pos]
        sums = np.add.reduceat(terms, starts)
    return _mix(sums ^ _mix(np.uint64(seed) + lengths.astype(np.uint64)))


def signatures(texts: pa.Array, shingle_size: int, num_perm: int, seed: int) -> np.ndarray:
    """The MinHash signature of each text: an (n, num_perm) uint32 array.

    Args:
        texts: the texts (null reads as empty).
        shingle_size: words per shingle.
        num_perm: hash functions, values per signature.
        seed: draws the hash functions and salts the word hashes.
    """
    if shingle_size < 1 or num_perm < 1:
        raise ConfigError("minhash: shingle_size and num_perm must be >= 1")
    if pa.types.is_null(texts.type):  # a JSONL batch whose texts are all null
        texts = texts.cast(pa.string())
    words = pc.utf8_split_whitespace(pc.utf8_lower(pc.fill_null(texts, "")))
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks()
    n = len(words)
    flat = words.flatten()
    # Arrow splits "" (and leading or trailing space) into empty words: not words.
    of_word = np.repeat(np.arange(n), np.asarray(pc.list_value_length(words).fill_null(0)))
    real = np.asarray(pc.binary_length(flat)) > 0
    flat = flat.filter(pa.array(real))
    counts = np.bincount(of_word[real], minlength=n).astype(np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    w = _string_hashes(flat, seed)
    doc = np.repeat(np.arange(n), counts)
    # Shingle i combines words i .. i+k-1 of its text (a short text's one
    # shingle stops at its end); order matters, so it is a polynomial.
    idx = np.arange(len(w))
    h = np.zeros(len(w), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(shingle_size):
            inside = idx + j < ends[doc]
            wj = np.where(inside, w[np.minimum(idx + j, max(len(w) - 1, 0))], np.uint64(0))
            h = h * np.uint64(0x9E3779B97F4A7C15) + wj
    whole = idx + shingle_size <= ends[doc]
    short = (counts[doc] < shingle_size) & (idx == starts[doc])
    keep = whole | short
    shingles = (_mix(h[keep]) >> np.uint64(32)).astype(np.uint64)
    owner = doc[keep]
    sig = np.full((n, num_perm), _EMPTY, np.uint32)
    has = np.unique(owner)
    if len(has) == 0:
        return sig
    first = np.searchsorted(owner, has)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 << 64, num_perm, dtype=np.uint64, endpoint=False)
    b = rng.integers(0, 1 << 64, num_perm, dtype=np.uint64, endpoint=False)
    buf = np.empty((min(_PERM_BLOCK, num_perm), len(shingles)), np.uint64)
    for lo in range(0, num_perm, _PERM_BLOCK):
        hi = min(lo + _PERM_BLOCK, num_perm)
        # Multiply-add-shift (Dietzfelbinger): strongly universal 32-bit hashes of
        # 32-bit shingles, with no modulus. Laid out (hash function, shingle) so
        # each function's minimum per text reduces over contiguous memory; in one
        # reused buffer (fresh arrays per step cost 5x the arithmetic).
        values = buf[: hi - lo]
        with np.errstate(over="ignore"):
            np.multiply(a[lo:hi, None], shingles[None, :], out=values)
            np.add(values, b[lo:hi, None], out=values)
        np.right_shift(values, np.uint64(32), out=values)
        sig[has, lo:hi] = np.minimum.reduceat(values, first, axis=1).T.astype(np.uint32)
    return sig


@dataclass
class MinHash(Stage):
    """Per batch: the text column's MinHash signatures, as a ``minhash`` column."""

    name = "minhash"
    version = "1"
    resources = Resources(num_cpus=1, max_actors=2)  # the costly step: every core

    text_column: str = "text"
    shingle_size: int = 3
    num_perm: int = 128
    seed: int = 42

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        sig = signatures(
            batch.column(self.text_column), self.shingle_size, self.num_perm, self.seed
        )
        values = pa.array(sig.reshape(-1), pa.uint32())
        column = pa.FixedSizeListArray.from_arrays(values, self.num_perm)
        return batch.append_column(SIGNATURE, column)


def components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Each node's component label: the lowest node index in its component.

    Min-label propagation with pointer jumping over the edges (left, right).
    """
    label = np.arange(n)
    while True:
        low = np.minimum(label[left], label[right])
        before = label.copy()
        np.minimum.at(label, left, low)
        np.minimum.at(label, right, low)
        label = label[label]  # a label is a node whose own label is lower still
        while not np.array_equal(label, label[label]):
            label = label[label]
        if np.array_equal(label, before):
            return label


def candidate_pairs(sig: np.ndarray, bands: int, rows_per_band: int) -> np.ndarray:
    """(m, 2) row pairs sharing a band bucket: each bucket member with its first and previous."""
    pairs = []
    salt = _mix(np.arange(1, rows_per_band + 1, dtype=np.uint64))
    for band in range(bands):
        cols = sig[:, band * rows_per_band : (band + 1) * rows_per_band].astype(np.uint64)
        with np.errstate(over="ignore"):
            bucket = _mix((cols * salt[None, :]).sum(axis=1, dtype=np.uint64) + np.uint64(band))
        order = np.argsort(bucket, kind="stable")  # ties stay in source order
        same = bucket[order][1:] == bucket[order][:-1]
        at = np.flatnonzero(same) + 1
        if len(at) == 0:
            continue
        start = np.where(np.concatenate([[True], ~same]), np.arange(len(order)), 0)
        head = np.maximum.accumulate(start)
        pairs.append(np.stack([order[head[at]], order[at]], axis=1))
        pairs.append(np.stack([order[at - 1], order[at]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(pairs), axis=0)


@dataclass
class LSH(GlobalStage):
    """Removes near-duplicates: LSH candidates, verified, in connected components.

    A global stage: its reduce sees every signature at once (see the module).
    """

    name = "lsh"
    version = "1"
    resources = Resources(num_cpus=1)

    id_column: str = "id"
    bands: int = 20
    rows_per_band: int = 5
    threshold: float = 0.7

    def reduce(self, rows: pa.Table) -> Reduced:
        column = rows.column(SIGNATURE).combine_chunks()
        width = column.type.list_size
        if self.bands < 1 or self.rows_per_band < 1 or self.bands * self.rows_per_band > width:
            raise ConfigError(
                f"lsh: bands x rows_per_band ({self.bands} x {self.rows_per_band}) must be "
                f"between 1 and the signature's {width} values; lower them or raise "
                "minhash.num_perm"
            )
        n = rows.num_rows
        sig = np.asarray(column.flatten(), np.uint32).reshape(n, width)
        pairs = candidate_pairs(sig, self.bands, self.rows_per_band)
        similar = (sig[pairs[:, 0]] == sig[pairs[:, 1]]).mean(axis=1) >= self.threshold
        edges = pairs[similar]
        label = components(n, edges[:, 0], edges[:, 1])  # rows are in source order
        gone = np.flatnonzero(label != np.arange(n))
        ids = rows.column(self.id_column)
        rep = label[gone]
        removed = pa.table(
            {
                "id": ids.take(pa.array(gone)),
                "duplicate_of": ids.take(pa.array(rep)),
                "similarity": pa.array((sig[gone] == sig[rep]).mean(axis=1), pa.float64()),
                "file": rows.column(FILE).take(pa.array(gone)),
                "row": rows.column(ROW).take(pa.array(gone)),
            }
        )
        kept = rows.filter(pa.array(label == np.arange(n))).drop_columns([SIGNATURE])
        return Reduced(kept, removed)


_VOCAB_SEED = 24


def vocabulary(rng: random.Random, size: int = 4_000) -> list[str]:
    """``size`` made-up words of 3-9 letters drawn from ``rng`` (the sample corpus's)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)]


def edit(words: list[str], fraction: float, rng: random.Random, vocab: list[str]) -> list[str]:
    """``words`` with about ``fraction`` of them edited (replaced, deleted or inserted)."""
    out = list(words)
    for _ in range(max(1, round(fraction * len(words)))):
        i = rng.randrange(len(out))
        op = rng.randrange(3)
        if op == 0:
            out[i] = rng.choice(vocab)
        elif op == 1 and len(out) > 1:
            del out[i]
        else:
            out.insert(i, rng.choice(vocab))
    return out


def sample_inputs(directory: str, files: int = 4, rows_per_file: int = 2_000) -> list[str]:
    """Write a corpus with planted near-duplicates (deterministic); return the file paths.

    About 10% of rows are a near-copy of an earlier row (1-3% of words edited),
    5% exact copies, 5% far variants (30% edited: not duplicates).
    """
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(_VOCAB_SEED)
    vocab = vocabulary(rng)
    texts: list[list[str]] = []
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"part-{f:03d}.jsonl")
        paths.append(path)
        lines = []
        for r in range(rows_per_file):
            roll = rng.random()
            if texts and roll < 0.1:
                words = edit(rng.choice(texts), rng.uniform(0.01, 0.03), rng, vocab)
            elif texts and roll < 0.15:
                words = rng.choice(texts)
            elif texts and roll < 0.2:
                words = edit(rng.choice(texts), 0.3, rng, vocab)
            else:
                words = [rng.choice(vocab) for _ in range(rng.randint(50, 200))]
                texts.append(words)
            lines.append(json.dumps({"id": f * rows_per_file + r, "text": " ".join(words)}))
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.replace(path + ".tmp", path)
    return paths


pipeline = Pipeline(
    name="fuzzy_dedup",
    stages=[MinHash(), LSH()],
    schema=SCHEMA,
    sample_inputs=sample_inputs,
)
