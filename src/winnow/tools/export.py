"""A run's output: export as one verified dataset, and quarantined records.

An export commits like an artifact: write under a temporary name beside the
target (``.<name>.winnow-tmp-<hex>``), read every file back and check its rows
and SHA-256, then publish. On a local disk a file is renamed over the target
and a folder is built whole and renamed (or swapped) into place. On object
storage a file is moved from its temporary key (an object is published
whole); a folder's parts are copied to their final names, stale ones of a
previous export removed, and the completion marker ``_winnow_export.json``
written last, so a folder without the marker is not a finished export.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from winnow import lineage
from winnow.errors import IntegrityError, UsageError
from winnow.storage.artifacts import ArtifactRef, ArtifactStore, output_store_url
from winnow.storage.fs import (
    discard,
    fsync_dir,
    is_local,
    join,
    location,
    refresh,
    replace_folder,
    resolve,
    temp_beside,
    to_url,
    write_atomic,
)
from winnow.storage.manifests import manifest_entries, manifests_folder, read_manifest
from winnow.storage.state import State, now_iso
from winnow.tools.export_file import ExportedFile, write_checked

TABLE_FORMATS = ("delta", "iceberg", "lance")
MARKER = "_winnow_export.json"  # a folder export's completion marker, written last
_PART = re.compile(r"part-\d{5}\.(parquet|jsonl)")
_CHUNK = 8 << 20


def export(
    state: State,
    job_id: str,
    to: str,
    fmt: str = "parquet",
    storage_options: dict[str, Any] | None = None,
    *,
    table: str | None = None,
    catalog: str | None = None,
) -> dict[str, Any]:
    """Write a job's output as one dataset in source order, verified, then published.

    With ``fmt`` ``delta``, ``iceberg`` or ``lance`` the output is appended to
    a table instead, exactly once per job and incrementally (only batches the
    table does not hold yet): see :func:`winnow.tools.sinks.export_table`.

    Args:
        state: the state holding the job's record.
        job_id: the job whose run manifest lists what to export.
        to: ending in ``.parquet``/``.jsonl``: one file (format by extension);
            else a folder of ``part-NNNNN`` files (one per batch with output) and
            ``_winnow_export.json``; a job without rows gives an empty file, or a
            folder with the marker and empty parts (none without batches).
        fmt: ``parquet`` or ``jsonl``, for a folder; or a table format:
            ``delta``, ``iceberg``, ``lance``.
        storage_options: for the artifact stores, the manifest and ``to``
            (default: the state's).
        table: Iceberg only: the table's ``namespace.name``.
        catalog: Iceberg only: a catalog configured the pyiceberg way
            (``~/.pyiceberg.yaml``, ``PYICEBERG_CATALOG__*``) instead of ``to``.

    Raises:
        UsageError: ``to`` is inside the state, an artifact store or the
            manifests, or is a folder that is not a previous export.
        IntegrityError: a source artifact or a written file does not verify;
            nothing was published.
    """
    started_at = now_iso()
    storage_options = state.storage_options if storage_options is None else storage_options
    if fmt in TABLE_FORMATS:
        from winnow.tools.sinks import export_table

        done = export_table(
            state, job_id, to or None, fmt, storage_options, table=table, catalog=catalog
        )
        lineage.exported(state.read_job(job_id), done, started_at, storage_options)
        return done
    if fmt not in ("parquet", "jsonl"):
        raise UsageError(f"--format {fmt!r}: choose parquet, jsonl, {', '.join(TABLE_FORMATS)}")
    if table is not None or catalog is not None:
        raise UsageError("--table and --catalog name an Iceberg table: add --format iceberg")
    record = state.read_job(job_id)
    if not record.get("manifest"):
        raise UsageError(f"job {job_id} has no output manifest (status {record.get('status')})")
    manifest = read_manifest(record["manifest"], storage_options)
    entries = manifest_entries(manifest)
    sources = Sources(entries, storage_options, f"export of {job_id} to {to}")
    refuse_protected(to, state, record, sources, storage_options)
    fs, final = resolve(to, storage_options)
    final = final.rstrip("/")
    if not posixpath.basename(final) or (not is_local(fs) and "/" not in final.strip("/")):
        raise UsageError(f"--to {to!r} names no file or folder inside a bucket or disk")
    result: dict[str, Any] = {"job_id": job_id, "to": to, "format": fmt}
    if to.endswith((".parquet", ".jsonl")):
        fmt = result["format"] = "jsonl" if to.endswith(".jsonl") else "parquet"
        written = _export_file(fs, final, sources, fmt)
        result.update(files=[to], parts=[{**asdict(written), "name": to}], marker=None)
    else:
        marker = {
            "winnow_export": 1,
            "job_id": job_id,
            "pipeline": manifest.get("pipeline"),
            "manifest": record["manifest"],
            "format": fmt,
        }
        parts = _export_folder(fs, final, sources, fmt, marker)
        base = to.rstrip("/")
        result.update(
            files=[join(base, p.name) for p in parts],
            parts=[{**asdict(p), "name": join(base, p.name)} for p in parts],
            marker=join(base, MARKER),
        )
    result.update(rows=sources.records, missing_batches=len(manifest["batches"]) - len(entries))
    lineage.exported(record, result, started_at, storage_options)  # OpenLineage, when on
    return result


class Sources:
    """The manifest's artifacts, each re-hashed against its checkpoint as it is read."""

    def __init__(self, entries: list[dict[str, Any]], options: dict[str, Any] | None, what: str):
        self.refs = [ArtifactRef(**e["artifact"]) for e in entries]
        self.records = sum(ref.records for ref in self.refs)
        self.options = options
        self.what = what
        self.stores: dict[str, ArtifactStore] = {}

    def store(self, ref: ArtifactRef) -> ArtifactStore:
        """The store that holds ``ref`` (one per root, shared)."""
        return ArtifactStore.for_uri(ref.uri, self.options, self.stores)

    def tables(self) -> Iterator[pa.Table]:
        """Each artifact as a table, in order, re-hashed and its rows counted as read."""
        for ref in self.refs:
            with self._checked(ref):
                table = self.store(ref).read(ref)
            if table.num_rows != ref.records:
                raise self._damaged(
                    ref, f"holds {table.num_rows} rows, checkpoint says {ref.records}"
                )
            yield table

    def schema(self) -> pa.Schema:
        """One schema for one Parquet file: the artifacts' footers, unified.

        Batches of a schema-less pipeline may differ (a column all null in one);
        only the footers are read here, each artifact is verified when read.
        """
        schemas = []
        for ref in self.refs:
            store = self.store(ref)
            with self._checked(ref):
                if ref.format == "parquet":
                    with store.open(ref) as fh:
                        schemas.append(pq.read_schema(fh))
                else:
                    schemas.append(store.read(ref).schema)
        if not schemas:
            return pa.schema([])
        return pa.unify_schemas(schemas, promote_options="permissive")

    @contextlib.contextmanager
    def _checked(self, ref: ArtifactRef) -> Iterator[None]:
        try:
            yield
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}. {self.what} published nothing") from None
        except FileNotFoundError:
            raise self._damaged(ref, "is missing") from None
        except pa.ArrowException as exc:
            raise self._damaged(ref, f"does not decode ({exc})") from None

    def _damaged(self, ref: ArtifactRef, problem: str) -> IntegrityError:
        return IntegrityError(
            f"artifact {ref.uri} {problem}; {self.what} published nothing. Fix: run "
            "`winnow verify --full` (marks it damaged), then rerun the pipeline to "
            "recompute it, and export again"
        )


def refuse_protected(
    to: str,
    state: State,
    record: dict[str, Any],
    sources: Sources,
    options: dict[str, Any] | None,
) -> None:
    """Refuse a target inside (or holding) the state, an artifact store or the manifests."""
    output = (record.get("output_url") or "").rstrip("/")
    protected = [("state root", state.url), ("state root", record.get("state_url"))]
    if output:
        protected += [
            ("artifact store", output_store_url(output)),
            ("manifests folder", manifests_folder(output)),
        ]
    stores = {sources.store(ref).root_url for ref in sources.refs}  # where the manifest points
    protected += [("artifact store", url) for url in sorted(stores)]
    target = location(to, options)
    for what, url in protected:
        if not url:
            continue
        place = location(url, options)
        if _within(target, place):
            relation = "inside"
        elif _within(place, target):
            relation = "a folder holding"
        else:
            continue
        raise UsageError(
            f"--to {to!r} is {relation} the {what} {url!r}: an export there would mix "
            "with or overwrite Winnow's own files. Fix: pass a --to outside it, "
            "e.g. a new folder beside it"
        )


def _within(inner: tuple[str, str], outer: tuple[str, str]) -> bool:
    return inner[0] == outer[0] and (
        inner[1] == outer[1] or inner[1].startswith(outer[1].rstrip("/") + "/")
    )


def _export_file(fs: Any, final: str, sources: Sources, fmt: str) -> ExportedFile:
    if fs.isdir(final):
        raise UsageError(
            f"--to {to_url(fs, final)!r} is a folder; a target ending in .{fmt} is one file. "
            "Fix: pass a file name that is not taken, or a folder without the extension"
        )
    schema = sources.schema() if fmt == "parquet" else None
    tmp = temp_beside(final)
    fs.makedirs(posixpath.dirname(final), exist_ok=True)
    try:
        written = write_checked(fs, tmp, sources.tables(), fmt, schema, posixpath.basename(final))
        _check_total([written], sources)
        if is_local(fs):
            os.replace(tmp, final)
            fsync_dir(posixpath.dirname(final))
        else:
            fs.mv(tmp, final)  # s3: a server-side copy publishes the whole object
            _check_sizes(fs, {final: written.bytes})
    except BaseException:
        discard(fs, tmp)
        raise
    return written


def _export_folder(
    fs: Any, final: str, sources: Sources, fmt: str, marker: dict[str, Any]
) -> list[ExportedFile]:
    previous = _previous_export(fs, final)
    tmp = temp_beside(final)
    fs.makedirs(tmp, exist_ok=True)
    try:
        parts = [
            write_checked(
                fs, join(tmp, f"part-{n:05d}.{fmt}"), [table], fmt, None, f"part-{n:05d}.{fmt}"
            )
            for n, table in enumerate(sources.tables())
        ]
        _check_total(parts, sources)
        body = {
            **marker,
            "rows": sum(p.rows for p in parts),
            "parts": [asdict(p) for p in parts],
            "exported_at": now_iso(),
        }
        data = json.dumps(body, indent=1).encode()
        if is_local(fs):
            write_atomic(fs, join(tmp, MARKER), data)
            fsync_dir(tmp)
            if previous is None:
                os.rename(tmp, final)  # replaces an empty folder, or none
                fsync_dir(posixpath.dirname(final))
            else:
                replace_folder(tmp, final)
        else:
            _publish_objects(fs, tmp, final, parts, data, previous or set())
    except BaseException:
        discard(fs, tmp)
        raise
    return parts


def _previous_export(fs: Any, final: str) -> set[str] | None:
    """The names of a previous export at ``final``; ``None`` when there is nothing there.

    A folder holding other things is refused. On object storage a folder of
    ``part-NNNNN`` files without the marker counts too: it is what an
    interrupted publish leaves (the marker goes first), and rerunning fixes it.
    """
    refresh(fs, final)
    if not fs.exists(final):
        return None
    url = to_url(fs, final)
    if not fs.isdir(final):
        raise UsageError(
            f"--to {url!r} is a file; a folder export needs a folder. Fix: end --to "
            "in .parquet or .jsonl for one file, or pass a new folder"
        )
    names = {
        posixpath.basename(p.rstrip("/"))
        for p in fs.ls(final, detail=False)
        if p.rstrip("/") != final  # an object store's folder placeholder
    }
    if not names:
        return None
    parts = {n for n in names if _PART.fullmatch(n)}
    if MARKER in names:
        old = json.loads(fs.cat_file(join(final, MARKER)))
        return parts | {p["name"] for p in old.get("parts", [])}
    if not is_local(fs) and parts == names:
        return parts
    shown = ", ".join(sorted(names)[:3])
    raise UsageError(
        f"--to {url!r} is a folder that holds other files ({shown}) and no {MARKER}, "
        "so it is not a previous Winnow export; Winnow replaces only its own exports. "
        "Fix: pass a new or empty folder, or remove that one first"
    )


def _check_total(files: list[ExportedFile], sources: Sources) -> None:
    rows = sum(f.rows for f in files)
    if rows != sources.records:
        raise IntegrityError(
            f"{sources.what} wrote {rows} rows, the manifest's artifacts hold "
            f"{sources.records}; nothing was published. Run `winnow verify --full`, "
            "then the export again"
        )


def _check_sizes(fs: Any, sizes: dict[str, int]) -> None:
    """Object storage: each published copy has the size of the file that was verified."""
    for path, size in sizes.items():
        refresh(fs, path)
        found = fs.info(path).get("size")
        if found != size:
            raise IntegrityError(
                f"export file {to_url(fs, path)} holds {found} bytes after the copy, {size} "
                "were verified (a folder without its marker is unfinished); export again"
            )


def _publish_objects(
    fs: Any, tmp: str, final: str, parts: list[ExportedFile], marker: bytes, previous: set[str]
) -> None:
    """Object storage: old marker out, parts to final names, stale parts out, marker last."""
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(join(final, MARKER))
    for part in parts:
        fs.copy(join(tmp, part.name), join(final, part.name))
    _check_sizes(fs, {join(final, p.name): p.bytes for p in parts})
    for name in sorted(previous - {p.name for p in parts} - {MARKER}):
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(join(final, name))
    write_atomic(fs, join(final, MARKER), marker)
    discard(fs, tmp)
