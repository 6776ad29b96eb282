"""fuzzy_dedup's parts without an executor: signatures, bands, components, the four stages."""

from __future__ import annotations

import math
import random
from typing import Any

import fuzzy_dedup  # pipelines/ is on sys.path (tests/conftest.py)
import numpy as np
import pyarrow as pa
import pytest

from winnow.errors import ConfigError
from winnow.grouping import (
    FILE,
    KEY,
    ROW,
    MapSide,
    ReduceSide,
    split_reduced,
    with_position,
)


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


def test_documents_sharing_a_band_share_its_bucket_and_bands_never_collide():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [8, 8, 3, 4], [3, 4, 1, 2]], np.uint32)
    keys = fuzzy_dedup.band_keys(sig, 2, 2)
    assert keys.shape == (4, 2) and keys.dtype == np.uint64
    assert keys[0, 0] == keys[1, 0] and keys[0, 1] == keys[2, 1]
    assert keys[0, 1] != keys[1, 1] and keys[0, 0] != keys[2, 0]
    assert keys[3, 1] != keys[0, 0]  # equal values in another band: another bucket


def caught(s: float, bands: int, rows: int, min_bands: int) -> float:
    """The chance a pair of Jaccard similarity ``s`` shares ``min_bands`` buckets or more."""
    p = s**rows
    return 1 - sum(math.comb(bands, k) * p**k * (1 - p) ** (bands - k) for k in range(min_bands))


@pytest.mark.parametrize("min_bands", [1, 2])
def test_the_threshold_chooses_bands_and_rows_whose_curve_crosses_near_it(min_bands: int):
    for t in (0.3, 0.5, 0.7, 0.9):
        bands, rows = fuzzy_dedup.lsh_params(t, 128, min_bands)
        assert bands * rows <= 128 and bands >= min_bands
        assert 0.15 < caught(t, bands, rows, min_bands) < 0.85, t  # the curve's middle
    stricter = [fuzzy_dedup.lsh_params(t, 128, min_bands)[1] for t in (0.3, 0.5, 0.7, 0.9)]
    assert stricter == sorted(stricter) and stricter[0] < stricter[-1]
    with pytest.raises(ConfigError, match="threshold"):
        fuzzy_dedup.lsh_params(1.5, 128, min_bands)


def test_the_default_split_parts_near_copies_from_far_variants():
    # Planted near copies (1-3% of words edited) have Jaccard similarity >= 0.8 and
    # far variants (30%) <= 0.4 (measured on the sample corpus's generator).
    bands, rows = fuzzy_dedup.LSH().split(128)
    assert (bands, rows) == (29, 4)
    assert caught(0.8, bands, rows, 4) > 0.9995 and caught(0.35, bands, rows, 4) < 0.001


def dedup_in_memory(texts: list[str], lsh: Any) -> tuple[pa.RecordBatch, pa.RecordBatch | None]:
    """The four stages on one batch of ``texts`` without an executor: (kept, removed)."""
    batch = pa.RecordBatch.from_pydict({"id": list(range(100, 100 + len(texts))), "text": texts})
    signed = fuzzy_dedup.MinHash(num_perm=32).process(batch)
    assert signed.column_names == ["id", "minhash"]  # the text is read again by keep
    shards = MapSide(lsh).split(signed, "f.jsonl", 0)
    assert all(t.column_names == ["id", KEY, FILE, ROW] for t in shards.values())
    assert sum(t.num_rows for t in shards.values()) == len(texts) * lsh.split(32)[0]
    edges = [ReduceSide(lsh).reduce_shards([pa.table(t)])[0] for t in shards.values()]
    components = fuzzy_dedup.Components().reduce(pa.Table.from_batches(edges))
    keep = fuzzy_dedup.Keep()
    return split_reduced(keep.rejoin(with_position(batch, "f.jsonl", 0), keep.prepare(components)))


def test_the_stages_keep_the_first_of_each_cluster_and_say_what_each_removed_row_duplicates():
    words = [f"w{i}" for i in range(60)]
    texts = ["x y z " * 20, " ".join(words), " ".join(words[:59]), " ".join(words[:58])]
    kept, removed = dedup_in_memory(texts, fuzzy_dedup.LSH(bands=8, rows_per_band=4))
    assert kept.column_names == ["id", "text"]
    assert kept.column("id").to_pylist() == [100, 101]
    assert removed is not None
    assert removed.column("id").to_pylist() == [102, 103]
    assert removed.column("duplicate_of").to_pylist() == [101, 101]
    assert removed.column("row").to_pylist() == [2, 3]
    assert removed.column("kept_row").to_pylist() == [1, 1]
    assert set(removed.column("file").to_pylist()) == {"f.jsonl"}


def test_without_duplicates_everything_is_kept():
    kept, removed = dedup_in_memory(["a b c d", "e f g h", "i j k l"], fuzzy_dedup.LSH())
    assert kept.column("id").to_pylist() == [100, 101, 102]
    assert removed is None or removed.num_rows == 0


def test_more_bands_than_the_signature_holds_is_a_config_error():
    batch = pa.RecordBatch.from_pydict({"id": [1], "text": ["a b c"]})
    signed = fuzzy_dedup.MinHash(num_perm=32).process(batch)
    with pytest.raises(ConfigError, match=r"minhash\.num_perm"):
        fuzzy_dedup.LSH(bands=9, rows_per_band=4).key(signed)
