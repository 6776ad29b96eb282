"""Fuzzy deduplication: MinHash signatures, LSH band buckets, connected components.

Four stages, each bounded in memory by its own data, never by the corpus:

* ``minhash`` (per batch): lower-cases the text, splits it into words and
  hashes every run of ``shingle_size`` consecutive words (word shingles; a
  text shorter than that is one shingle); the signature is, for each of
  ``num_perm`` hash functions ``((a * h + b) mod 2^64) >> 32`` drawn from
  ``seed``, the smallest value over the text's shingles, kept in a
  ``minhash`` column (``num_perm`` uint32) in place of the text. All in
  numpy, no per-word Python.
* ``lsh`` (a grouping stage): cuts each signature into ``bands`` bands of
  ``rows_per_band`` values and sends each document (its id and source
  position, not its text) to the partition of each band's bucket; a reduce
  partition links every member of a bucket to the bucket's first (lowest
  source position): the candidate pairs, as edges. ``bands`` and
  ``rows_per_band`` follow from ``threshold``, the Jaccard similarity from
  which texts count as duplicates (the band/row split that minimizes the
  false positive and false negative areas under its S-curve, as datasketch
  chooses it), unless set.
* ``components`` (a global stage): the connected components of the edges
  alone (not the texts) are the duplicate clusters; each keeps its lowest
  source position (input file URL, then row) and every other member is
  removed, with the id and position of the document it duplicates.
* ``keep`` (a rejoin stage): reads the input again, batch by batch, and
  drops the removed documents; the kept rows are the run's output, the
  removed ones (``id``, ``duplicate_of``, ``file``, ``row``, ``kept_file``,
  ``kept_row``) ``winnow inspect removed``.

The signatures are computed once: ``--set lsh.threshold=0.8`` (or
``lsh.bands``, ``lsh.rows_per_band``) reruns ``lsh`` and what follows
(``components`` and ``keep`` only if the edges changed). Changing
``minhash.*`` reruns everything.

    winnow run fuzzy_dedup --input 'DIR/*.jsonl' --profile local-cpu
    winnow run fuzzy_dedup --set lsh.threshold=0.8 ...

Memory: ``minhash`` holds a batch; ``lsh`` a partition of band entries
(``bands`` x documents / partitions rows of id and position; the partition
count follows the profile's ``partition_mb``); ``components`` every edge
(about ``bands`` per duplicate) and ``keep`` every removed document's id and
position, in each worker.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources, Stage
from winnow.errors import ConfigError
from winnow.grouping import FILE, KEY, ROW, GlobalStage, GroupingStage, Reduced
from winnow.rejoin import Rejoin

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
    """Per batch: the text column's MinHash signatures, as a ``minhash`` column in its place."""

    name = "minhash"
    version = "2"
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
        rest = batch.drop_columns([self.text_column])  # ``keep`` reads the text again
        return rest.append_column(SIGNATURE, column)


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


_PARAMS: dict[tuple[float, int, int], tuple[int, int]] = {}  # chosen splits, per process


def lsh_params(threshold: float, width: int, min_bands: int = 1) -> tuple[int, int]:
    """(bands, rows per band) of at most ``width`` values for a Jaccard ``threshold``.

    A pair of similarity ``s`` shares a given band's bucket with chance
    ``p = s^rows``, and counts as a duplicate when it shares at least
    ``min_bands`` of them: the split chosen has the least false positive area
    below ``threshold`` plus false negative area above it under that curve.
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"lsh: threshold must be between 0 and 1, not {threshold}")
    if (threshold, width, min_bands) not in _PARAMS:
        _PARAMS[threshold, width, min_bands] = _best_split(threshold, width, min_bands)
    return _PARAMS[threshold, width, min_bands]


def _best_split(threshold: float, width: int, min_bands: int) -> tuple[int, int]:
    s = np.linspace(0.0, 1.0, 1001)
    below = s < threshold
    best: tuple[float, int, int] | None = None
    for rows in range(1, width // min_bands + 1):
        bands = np.arange(min_bands, width // rows + 1)
        p = s[None, :] ** rows
        missed = np.zeros((len(bands), len(s)))
        for k in range(min_bands):  # the chance of sharing fewer than min_bands buckets
            ways = np.array([math.comb(int(b), k) for b in bands], np.float64)[:, None]
            missed += ways * p**k * (1.0 - p) ** (bands[:, None] - k)
        error = np.where(below, 1.0 - missed, missed).sum(axis=1)
        i = int(np.argmin(error))
        if best is None or error[i] < best[0]:
            best = (float(error[i]), int(bands[i]), rows)
    if best is None:
        raise ConfigError(f"lsh: min_bands {min_bands} is more than the signature's {width} values")
    return best[1], best[2]


def band_keys(sig: np.ndarray, bands: int, rows_per_band: int) -> np.ndarray:
    """(n, bands) uint64: each band's bucket, a hash of its values and the band's number."""
    n = sig.shape[0]
    cols = sig[:, : bands * rows_per_band].reshape(n, bands, rows_per_band).astype(np.uint64)
    h = np.broadcast_to(_mix(np.arange(1, bands + 1, dtype=np.uint64)), (n, bands)).copy()
    for j in range(rows_per_band):
        h = _mix(h ^ cols[:, :, j])
    return h


@dataclass
class LSH(GroupingStage):
    """Candidate pairs: documents sharing an LSH band bucket, linked to its first member."""

    name = "lsh"
    version = "2"
    partitions = 16
    resources = Resources(num_cpus=1)

    id_column: str = "id"
    threshold: float = 0.6
    min_bands: int = 4  # buckets a pair must share to be duplicates
    bands: int = 0  # 0: chosen with rows_per_band from the threshold
    rows_per_band: int = 0

    def split(self, width: int) -> tuple[int, int]:
        """(bands, rows per band) for signatures of ``width`` values."""
        bands, rows = self.bands, self.rows_per_band
        if self.min_bands < 1:
            raise ConfigError(f"lsh: min_bands must be >= 1, not {self.min_bands}")
        if bands == 0 and rows == 0:
            bands, rows = lsh_params(self.threshold, width, self.min_bands)
        if bands < self.min_bands or rows < 1 or bands * rows > width:
            raise ConfigError(
                f"lsh: bands x rows_per_band ({bands} x {rows}) must be between min_bands "
                f"({self.min_bands}) and the signature's {width} values; lower them, set both "
                "to 0 (chosen from the threshold) or raise minhash.num_perm"
            )
        return bands, rows

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        column = batch.column(SIGNATURE)
        width = column.type.list_size
        sig = np.asarray(column.flatten(), np.uint32).reshape(batch.num_rows, width)
        bands, rows = self.split(width)
        keys = band_keys(sig, bands, rows)
        return pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), bands)

    def shard_columns(self) -> list[str]:
        return [self.id_column]

    def reduce(self, rows: pa.Table) -> pa.Table:
        # Rows come in source order: a stable sort by bucket keeps it within each.
        key = np.asarray(rows.column(KEY).combine_chunks())
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
        member = np.flatnonzero(same) + 1
        start = np.where(np.concatenate([[True], ~same]), np.arange(len(order)), 0)
        first = order[np.maximum.accumulate(start)[member]]
        member = order[member]
        ids, file, row = (rows.column(c) for c in (self.id_column, FILE, ROW))
        edges = pa.table(
            {
                "file": file.take(member),
                "row": row.take(member),
                "id": ids.take(member),
                "first_file": file.take(first),
                "first_row": row.take(first),
                "first_id": ids.take(first),
            }
        )
        # A pair sharing several buckets of this partition is one edge, counting them.
        edges = edges.group_by(edges.column_names, use_threads=False).aggregate([([], "count_all")])
        edges = edges.rename_columns([*edges.column_names[:-1], "bands"])
        need = pa.array(np.full(edges.num_rows, self.min_bands, np.int64))
        return edges.append_column("min_bands", need)


@dataclass
class Components(GlobalStage):
    """Duplicate clusters: connected components of every edge; all but the first removed."""

    name = "components"
    version = "1"
    resources = Resources(num_cpus=1)

    def reduce(self, rows: pa.Table) -> pa.Table:
        # A pair is an edge when it shares at least min_bands buckets, over every partition.
        pair = ["file", "row", "id", "first_file", "first_row", "first_id"]
        need = pc.max(rows.column("min_bands")).as_py() or 1
        rows = rows.group_by(pair, use_threads=False).aggregate([("bands", "sum")])
        rows = rows.filter(pc.greater_equal(rows.column("bands_sum"), need))
        ends = [rows.column(c).combine_chunks() for c in ("first_file", "file")]
        files = pc.unique(pa.concat_arrays(ends)).sort()  # positions sort as files, then rows

        def node(file: pa.Array, row_column: str) -> np.ndarray:
            at = np.asarray(pc.index_in(file, value_set=files), np.int64)
            return (at << 40) | np.asarray(rows.column(row_column), np.int64)

        a, b = node(ends[0], "first_row"), node(ends[1], "row")
        nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)  # source order
        left, right = index[: len(a)], index[len(a) :]
        label = components(len(nodes), left, right)
        ids = pa.concat_arrays([rows.column(c).combine_chunks() for c in ("first_id", "id")])
        where = np.empty(len(nodes), np.int64)
        where[index] = np.arange(len(index))  # an edge end of each node, for its id
        gone = np.flatnonzero(label != np.arange(len(nodes)))
        rep = label[gone]
        return pa.table(
            {
                "id": ids.take(pa.array(where[gone])),
                "duplicate_of": ids.take(pa.array(where[rep])),
                "file": files.take(pa.array(nodes[gone] >> 40)),
                "row": pa.array(nodes[gone] & ((1 << 40) - 1)),
                "kept_file": files.take(pa.array(nodes[rep] >> 40)),
                "kept_row": pa.array(nodes[rep] & ((1 << 40) - 1)),
            }
        )


@dataclass
class Keep(Rejoin):
    """The input again, less every document ``components`` removed (set aside with why)."""

    name = "keep"
    version = "1"
    resources = Resources(num_cpus=1)

    def prepare(self, context: pa.Table) -> dict[str, pa.Table]:
        if context.num_rows == 0:
            return {}
        by_file = context.sort_by([("file", "ascending"), ("row", "ascending")])
        files = by_file.column("file").to_numpy(zero_copy_only=False)
        cut = np.flatnonzero(files[1:] != files[:-1]) + 1
        bounds = zip(np.concatenate([[0], cut]), np.concatenate([cut, [len(files)]]), strict=True)
        return {str(files[lo]): by_file.slice(lo, hi - lo) for lo, hi in bounds}

    def rejoin(self, batch: pa.RecordBatch, context: dict[str, pa.Table]) -> Reduced:
        row = np.asarray(batch.column(ROW))
        file = batch.column(FILE)[0].as_py() if batch.num_rows else ""
        mine = context.get(file)
        if mine is None:
            return Reduced(batch)
        gone = np.isin(row, np.asarray(mine.column("row")))
        here = np.isin(np.asarray(mine.column("row")), row)
        return Reduced(batch.filter(pa.array(~gone)), mine.filter(pa.array(here)))


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
    stages=[MinHash(), LSH(), Components(), Keep()],
    schema=SCHEMA,
    sample_inputs=sample_inputs,
)
