"""A job's output as a Ray Dataset, read in parallel by Ray's workers.

Each artifact of the run manifest is read by a Ray Data task, which re-hashes
its bytes against the manifest's SHA-256 (``ArtifactStore.read``) before the
rows go on; the driver holds only the artifacts' references, never their
rows. Reading the files with ``ray.data.read_parquet`` would skip that check
(and only fit Parquet artifacts).
"""

from __future__ import annotations

import functools
from typing import Any

import pyarrow as pa
import ray

from winnow.execution import cluster
from winnow.storage.artifacts import ArtifactRef, ArtifactStore

REF_FIELDS = ("uri", "digest", "bytes", "records", "schema_fp", "format")


def ray_dataset(
    refs: list[ArtifactRef],
    storage_options: dict[str, Any] | None = None,
    address: str | None = None,
) -> Any:
    """A lazy ``ray.data.Dataset`` over these artifacts, one read task per artifact.

    Connects to Ray first if this process is not: to ``address`` (or
    ``RAY_ADDRESS``), else an embedded local Ray on 127.0.0.1, which stays up
    while the dataset is used (``ray.shutdown()`` stops it). The artifacts
    must be where Ray's workers can open them (on a cluster: object storage).
    Rows come out in source order: the dataset's context (its own, not the
    process's current one) preserves the order of its blocks.

    Args:
        refs: the artifacts, in source order.
        storage_options: for opening the artifacts' stores.
        address: the Ray cluster to attach to when not connected.
    """
    cluster.connect(address)
    if not refs:
        return ray.data.from_arrow(pa.table({}))
    items = [{k: getattr(ref, k) for k in REF_FIELDS} for ref in refs]
    listing = ray.data.from_items(items, override_num_blocks=len(items))
    read = functools.partial(read_artifacts, storage_options=storage_options or {})
    dataset = listing.map_batches(read, batch_size=1, batch_format="pyarrow")
    dataset.context.execution_options.preserve_order = True
    return dataset


def read_artifacts(listing: pa.Table, storage_options: dict[str, Any]) -> pa.Table:
    """The rows of the artifacts a table of references lists, each re-hashed as it is read."""
    tables = []
    for row in listing.to_pylist():
        ref = ArtifactRef(**{k: row[k] for k in REF_FIELDS})
        tables.append(ArtifactStore.for_uri(ref.uri, storage_options).read(ref))
    return pa.concat_tables(tables)
