"""fuzzy_dedup's parts without an executor: signatures, candidates, components, reduce."""

from __future__ import annotations

import random

import fuzzy_dedup  # pipelines/ is on sys.path (tests/conftest.py)
import numpy as np
import pyarrow as pa
import pytest

from winnow.errors import ConfigError
from winnow.grouping import FILE, KEY, ROW


def shingles(text: str, k: int) -> set[tuple[str, ...]]:
    words = text.lower().split()
    return {tuple(words[i : i + k]) for i in range(max(1, len(words) - k + 1))}


def test_a_signature_estimates_the_jaccard_similarity_of_word_shingles():
    rng = random.Random(3)
    vocab = fuzzy_dedup.vocabulary(rng)
    base = [rng.choice(vocab) for _ in range(150)]
    texts = [" ".join(base)] + [
        " ".join(fuzzy_dedup.edit(base, f, rng, vocab)) for f in (0.02, 0.1, 0.3, 0.6)
    ]
    sig = fuzzy_dedup.signatures(pa.array(texts), 3, 256, 42)
    for other in range(1, len(texts)):
        a, b = shingles(texts[0], 3), shingles(texts[other], 3)
        exact = len(a & b) / len(a | b)
        assert abs((sig[0] == sig[other]).mean() - exact) < 0.08, other


def test_a_signature_depends_on_the_text_and_seed_alone():
    texts = ["The quick  brown FOX jumps", "the quick brown fox jumps", "", None, "one", "two"]
    sig = fuzzy_dedup.signatures(pa.array(texts), 3, 64, 7)
    assert sig.shape == (6, 64) and sig.dtype == np.uint32
    assert (sig[0] == sig[1]).all()  # case and spacing are not words
    assert (sig[2] == sig[3]).all() and (sig[2] == 0xFFFFFFFF).all()  # no words
    assert (sig[4] != sig[5]).any()  # a text shorter than a shingle is one shingle
    alone = [fuzzy_dedup.signatures(pa.array([t]), 3, 64, 7)[0] for t in texts]
    assert (np.stack(alone) == sig).all()  # the same in any batch
    assert (fuzzy_dedup.signatures(pa.array(texts), 3, 64, 8) != sig).any()


def test_components_label_each_node_with_its_components_lowest_node():
    left, right = np.array([4, 1, 2, 6, 7]), np.array([2, 2, 0, 5, 6])
    assert fuzzy_dedup.components(8, left, right).tolist() == [0, 0, 0, 3, 0, 5, 5, 5]
    assert fuzzy_dedup.components(3, left[:0], right[:0]).tolist() == [0, 1, 2]


def test_candidate_pairs_share_a_band():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [8, 8, 3, 4], [5, 5, 5, 5]], np.uint32)
    pairs = fuzzy_dedup.candidate_pairs(sig, 2, 2)
    assert sorted(map(tuple, pairs.tolist())) == [(0, 1), (0, 2)]


def partition(texts: list[str], num_perm: int = 32) -> pa.Table:
    batch = pa.RecordBatch.from_pydict({"id": list(range(len(texts))), "text": texts})
    rows = fuzzy_dedup.MinHash(num_perm=num_perm).process(batch)
    n = len(texts)
    return (
        pa.Table.from_batches([rows])
        .append_column(KEY, pa.array([0] * n, pa.uint64()))
        .append_column(FILE, pa.array(["f"] * n))
        .append_column(ROW, pa.array(range(n)))
    )


def test_reduce_keeps_the_first_of_each_cluster_and_says_what_each_removed_row_duplicates():
    words = [f"w{i}" for i in range(60)]
    texts = ["x y z " * 20, " ".join(words), " ".join(words[:59]), " ".join(words[:58])]
    out = fuzzy_dedup.LSH(bands=8, rows_per_band=4, threshold=0.8).reduce(partition(texts))
    assert out.kept.column_names[:2] == ["id", "text"] and "minhash" not in out.kept.column_names
    assert out.kept.column("id").to_pylist() == [0, 1]
    assert out.removed.column("id").to_pylist() == [2, 3]
    assert out.removed.column("duplicate_of").to_pylist() == [1, 1]
    assert all(s > 0.8 for s in out.removed.column("similarity").to_pylist())


def test_more_bands_than_the_signature_holds_is_a_config_error():
    with pytest.raises(ConfigError, match=r"minhash\.num_perm"):
        fuzzy_dedup.LSH(bands=9, rows_per_band=4).reduce(partition(["a b c"], num_perm=32))
