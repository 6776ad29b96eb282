"""Exact deduplication: keep the first copy of each text, record what each copy duplicates.

One grouping stage (``winnow.GroupingStage``): its key is a 128-bit BLAKE2b
digest of the normalized text (lower case, whitespace runs collapsed to one
space, trimmed), so copies that differ only in case or spacing are
duplicates. Its reduce keeps, per digest, the row with the lowest source
position (input file URL, then row), and sets every other aside with the id
it duplicates.

    winnow run exact_dedup --input 'DIR/*.jsonl' --profile local-cpu
    winnow run exact_dedup --set dedup.text_column=body --set dedup.id_column=doc_id ...

The run's output (``winnow export``) holds the kept rows. The removed rows
(``id``, ``duplicate_of``, ``file``, ``row``) are a second artifact of each
partition: ``winnow inspect removed`` or ``winnow.removed(state, job_id)``.
With no ``--input``, ``sample_inputs`` writes a small corpus with planted
exact and normalized copies across files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow import Pipeline, Resources
from winnow.grouping import FILE, KEY, ROW, GroupingStage, Reduced

SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])


def normalize(text: pa.Array) -> pa.Array:
    """Lower case, whitespace runs as one space, trimmed; null as the empty string."""
    text = pc.utf8_lower(pc.fill_null(text, ""))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r"\s+", " "))


@dataclass
class ExactDedup(GroupingStage):
    """Drops rows whose normalized text an earlier row (in source order) has."""

    name = "dedup"
    version = "1"
    resources = Resources(num_cpus=1)

    text_column: str = "text"
    id_column: str = "id"
    partitions: int = 8  # type: ignore[misc]  # a parameter here: --set dedup.partitions=N

    def key(self, batch: pa.RecordBatch) -> pa.Array:
        texts = normalize(batch.column(self.text_column)).to_pylist()
        digests = [hashlib.blake2b(t.encode(), digest_size=16).digest() for t in texts]
        return pa.array(digests, pa.binary(16))

    def reduce_stream(self, shards: Iterator[pa.Table]) -> Iterator[Reduced]:
        """Shard by shard in source order, remembering each key's first id."""
        first: dict[bytes, Any] = {}
        for rows in shards:
            keys = rows.column(KEY).to_pylist()
            ids = rows.column(self.id_column).to_pylist()
            dupes, of = [], []
            for i, (key, row_id) in enumerate(zip(keys, ids, strict=True)):
                if key in first:
                    dupes.append(i)
                    of.append(first[key])
                else:
                    first[key] = row_id
            kept = np.ones(rows.num_rows, bool)
            kept[dupes] = False
            yield Reduced(rows.filter(pa.array(kept)), self._removed(rows, dupes, of))

    def _removed(self, rows: pa.Table, dupes: list[int], of: list[Any]) -> pa.Table:
        at = pa.array(dupes, pa.int64())
        ids = rows.column(self.id_column)
        return pa.table(
            {
                "id": ids.take(at),
                "duplicate_of": pa.array(of, ids.type),
                "file": rows.column(FILE).take(at),
                "row": rows.column(ROW).take(at),
            }
        )


_WORDS = [
    "data",
    "model",
    "pipeline",
    "record",
    "batch",
    "arrow",
    "ray",
    "actor",
    "stage",
    "quality",
    "filter",
    "corpus",
]


def sample_inputs(directory: str, files: int = 4, rows_per_file: int = 2_000) -> list[str]:
    """Write a corpus with planted duplicates (deterministic); return the file paths.

    About 10% of rows copy an earlier row's text (any file): half exactly, half
    with case and spacing changed.
    """
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(24)
    texts: list[str] = []
    paths = []
    for f in range(files):
        path = os.path.join(directory, f"part-{f:03d}.jsonl")
        paths.append(path)
        lines = []
        for r in range(rows_per_file):
            i = f * rows_per_file + r
            if texts and rng.random() < 0.1:
                text = rng.choice(texts)
                if rng.random() < 0.5:
                    text = "  " + text.upper().replace(" ", "\t ") + " "
            else:
                text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(5, 30)))
                texts.append(text)
            lines.append(json.dumps({"id": i, "text": text}))
        if not os.path.exists(path):
            with open(path + ".tmp", "w") as fh:
                fh.write("\n".join(lines) + "\n")
            os.replace(path + ".tmp", path)
    return paths


pipeline = Pipeline(
    name="exact_dedup", stages=[ExactDedup()], schema=SCHEMA, sample_inputs=sample_inputs
)
