"""Run manifests: ``<output>/manifests/<pipeline>/<job_id>.json``.

A run manifest lists, for each batch of a job in source order, the final
stage's artifact (or None where the batch did not finish). Exports, the
report, the notebook and ``verify`` read it; only this module knows where it
lives and how it is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from winnow.storage.fs import join, refresh, resolve, to_url, write_atomic
from winnow.storage.refs import ArtifactRef

FOLDER = "manifests"


def manifests_folder(output_url: str) -> str:
    """Where a run's manifests live under its output URL."""
    return join(output_url.rstrip("/"), FOLDER)


def write_manifest(output_url: str, storage_options: dict[str, Any], body: dict[str, Any]) -> str:
    """Write ``body`` (with ``pipeline`` and ``job_id``) atomically; return its URL.

    ``body["batches"]`` may be any iterable of entries (a generator): they
    are encoded one at a time, laid out as ``json.dumps(body, indent=1)``
    lays them out, so a manifest of 100,000 batches is never held whole.
    """
    fs, root = resolve(output_url, storage_options)
    path = join(root, FOLDER, body["pipeline"], f"{body['job_id']}.json")
    write_atomic(fs, path, encode_manifest(body))
    return to_url(fs, path)


def encode_manifest(body: dict[str, Any]) -> Iterator[bytes]:
    """``json.dumps(body, indent=1)`` in chunks, one per entry of ``body["batches"]``."""
    head = {k: v for k, v in body.items() if k != "batches"}
    text = json.dumps(head, indent=1)
    yield (text[:-2] + "," if head else "{").encode() + b'\n "batches": ['
    first = True
    for entry in body["batches"]:
        # A raw newline only ever separates JSON tokens (one in a string is escaped).
        nested = json.dumps(entry, indent=1).replace("\n", "\n  ")
        yield ("\n  " if first else ",\n  ").encode() + nested.encode()
        first = False
    yield b"]\n}" if first else b"\n ]\n}"


def read_manifest(
    url: str, storage_options: dict[str, Any] | None = None, fresh: bool = False
) -> dict[str, Any]:
    """A job's run manifest (``record["manifest"]``) as a dict.

    Args:
        url: the manifest's URL, as the job record names it.
        storage_options: to reach it.
        fresh: look past a cached listing (an object store) first.

    Raises:
        FileNotFoundError: there is no manifest at ``url``.
        ValueError: it is not JSON.
    """
    fs, path = resolve(url, storage_options)
    if fresh:
        refresh(fs, path)
    return dict(json.loads(fs.cat_file(path)))


def manifest_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The batches of a manifest that have an artifact, in source order."""
    return [e for e in manifest["batches"] if e.get("artifact")]


def manifest_refs(manifest: dict[str, Any]) -> list[ArtifactRef]:
    """The artifacts a manifest lists, in source order."""
    return [ArtifactRef(**e["artifact"]) for e in manifest_entries(manifest)]


def output_refs(
    record: dict[str, Any], storage_options: dict[str, Any] | None = None
) -> list[ArtifactRef]:
    """The artifacts of a job's output, in source order, as its run manifest lists them.

    Batches that did not finish (a failed job's) have none and are left out.
    """
    return manifest_refs(read_manifest(record["manifest"], storage_options))


def output_table(record: dict[str, Any], storage_options: dict[str, Any] | None = None) -> Any:
    """A job's output as one pyarrow Table, in source order, each artifact re-hashed as read."""
    import pyarrow as pa

    from winnow.storage.artifacts import ArtifactStore, output_store_url

    store = ArtifactStore(output_store_url(record["output_url"]), storage_options)
    tables = [store.read(ref) for ref in output_refs(record, storage_options)]
    return pa.concat_tables(tables) if tables else pa.table({})
