"""The content-addressed artifact store.

An artifact lives at ``<root>/sha256/<2 hex>/<64 hex>.<ext>``, named by the
SHA-256 of its bytes, which we compute ourselves (never a backend's ETag).
A commit is: write to a temporary name (on a local disk under ``<root>/tmp/``),
read back and verify, publish. The caller writes the checkpoint last. Nobody
else builds or parses these paths: tools find a store with :meth:`ArtifactStore.for_uri`
and ask it (:meth:`~ArtifactStore.check`, :meth:`~ArtifactStore.files`, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import posixpath
import uuid
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from winnow.errors import IntegrityError
from winnow.storage import formats
from winnow.storage.fs import is_local, join, modified_at, name_sizes, refresh, resolve, to_url
from winnow.storage.refs import (
    ArtifactProblem,
    ArtifactRef,
    Fault,
    StoredFile,
    check_digest,
    is_digest,
)

__all__ = [
    "ArtifactProblem",
    "ArtifactRef",
    "ArtifactStore",
    "Fault",
    "StoredFile",
    "check_digest",
    "dataset",
    "output_store_url",
]

PUBLISHED, TEMPORARY = "sha256", "tmp"  # the store's two folders under its root
_REF_FIELDS = frozenset(f.name for f in dataclasses.fields(ArtifactRef))
WRITE_ATTEMPTS = 3  # a commit whose read-back differs is rewritten this many times in all


def output_store_url(output_url: str) -> str:
    """The root of a run's artifact store under its output URL: ``<output>/artifacts``."""
    return join(output_url.rstrip("/"), "artifacts")


class ArtifactStore:
    """Artifacts under one root URL on any fsspec filesystem."""

    def __init__(self, root_url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root_url = root_url
        self.storage_options = storage_options or {}
        self.fs, self.root = resolve(root_url, self.storage_options)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArtifactStore, (self.root_url, self.storage_options))

    @staticmethod
    def root_of(uri: str) -> str:
        """The root URL of the store holding the artifact recorded at ``uri``."""
        return uri.rsplit("/", 3)[0]  # <root>/sha256/<2 hex>/<digest>.<ext>

    @classmethod
    def for_uri(
        cls,
        uri: str,
        storage_options: dict[str, Any] | None = None,
        opened: dict[str, ArtifactStore] | None = None,
    ) -> ArtifactStore:
        """The store that holds the artifact a checkpoint or manifest records at ``uri``.

        Args:
            uri: an artifact's recorded URI, ``<root>/sha256/<2 hex>/<digest>.<ext>``.
            storage_options: for a store opened here.
            opened: stores already opened, by root URL; a store opened here is
                added, so many artifacts of one store share it (and its listing).
        """
        root = cls.root_of(uri)
        if opened is None:
            return cls(root, storage_options)
        if root not in opened:
            opened[root] = cls(root, storage_options)
        return opened[root]

    @staticmethod
    def digest_of(uri: str) -> str:
        """The SHA-256 an artifact's recorded URI names (``<root>/sha256/<2>/<digest>.<ext>``).

        Raises:
            IntegrityError: ``uri`` does not name one.
        """
        return check_digest(posixpath.basename(uri).partition(".")[0])

    def path_for(self, digest: str, fmt: str) -> str:
        """Where an artifact with this ``digest`` and format is (or would be) published.

        Raises:
            IntegrityError: ``digest`` is not a SHA-256 hex digest.
        """
        check_digest(digest)
        return join(self.root, PUBLISHED, digest[:2], f"{digest}.{formats.EXTENSIONS[fmt]}")

    def path_of(self, uri: str) -> str:
        """Map a recorded URI back to a path, refusing anything outside the store."""
        name = posixpath.basename(uri)
        digest, _, ext = name.partition(".")
        check_digest(digest)
        fmt = {v: k for k, v in formats.EXTENSIONS.items()}.get(ext)
        if fmt is None:
            raise IntegrityError(f"artifact {uri!r} has an unknown extension {ext!r}")
        return self.path_for(digest, fmt)

    def put(self, batch: pa.RecordBatch, fmt: str, compression: str = "zstd") -> ArtifactRef:
        """Serialize, write to a temporary name, verify, publish; return the ref."""
        data = formats.serialize(batch, fmt, compression)
        schema_fp = formats.stored_schema_fp(batch.schema, fmt)
        return self.put_bytes(
            data, fmt, expected_records=batch.num_rows, expected_schema_fp=schema_fp
        )

    def put_bytes(
        self, data: bytes, fmt: str, expected_records: int, expected_schema_fp: str = ""
    ) -> ArtifactRef:
        """Store serialised artifact bytes under their SHA-256 digest; return a verified ref.

        An artifact already published with the same digest is verified and reused
        (a damaged copy is overwritten). Otherwise the bytes are written (to a
        temporary in the store on a local disk, to the final key on an object
        store), read back and verified, and published; a write that does not read
        back the same is made ``WRITE_ATTEMPTS`` times in all. Verified: the bytes
        read back equal ``data`` and the format's footer gives the expected
        record count and schema (the full decode is ``verify``'s).

        Args:
            data: the serialised artifact.
            fmt: its format (``parquet``, ``ipc`` or ``jsonl``).
            expected_records: how many records its footer must report.
            expected_schema_fp: the schema fingerprint its footer must report
                (``formats.stored_schema_fp``); empty: not checked.

        Raises:
            IntegrityError: every attempt read back something other than ``data``.
        """
        digest = hashlib.sha256(data).hexdigest()
        final = self.path_for(digest, fmt)
        expected = ArtifactRef(
            uri=to_url(self.fs, final),
            digest=digest,
            bytes=len(data),
            records=expected_records,
            schema_fp=expected_schema_fp,
            format=fmt,
        )
        if self._exists(final):
            try:
                return self._verify_path(final, expected, written=data)
            except IntegrityError:
                pass  # a damaged copy: overwrite it below
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._commit(data, final, expected)
            except IntegrityError:
                # What we read back is not what we wrote: a torn write or a short
                # read. Nothing was published; write again, then give up loudly.
                if attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _commit(self, data: bytes, final: str, expected: ArtifactRef) -> ArtifactRef:
        if not is_local(self.fs):
            # An object store publishes a whole object on PUT (there is no rename to
            # make atomic): write the final key, then read it back and verify it.
            self._write(final, data)
            refresh(self.fs, final)
            try:
                return self._verify_path(final, expected, written=data)
            except BaseException:
                self._discard(final)
                raise
        tmp = join(self.root, TEMPORARY, f"{expected.digest}.{uuid.uuid4().hex}.partial")
        try:
            self._write(tmp, data)  # a full disk fails here, leaving a part to remove
            ref = self._verify_path(tmp, expected, written=data)
            self._publish(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return ArtifactRef(**{**ref.to_dict(), "uri": to_url(self.fs, final)})

    def read_bytes(self, uri: str) -> bytes:
        """The stored bytes of the artifact at ``uri``, as read (not verified: see ``read``).

        Raises:
            IntegrityError: ``uri`` is not an artifact of this store.
            FileNotFoundError: it is not there.
        """
        path = self.path_of(uri)
        refresh(self.fs, path)
        data: bytes = self.fs.cat_file(path)
        return data

    def read(self, ref: ArtifactRef | dict[str, Any]) -> pa.Table:
        """Read an artifact, re-hashing it on the way."""
        if isinstance(ref, dict):
            ref = ArtifactRef(**ref)
        data = self.read_bytes(ref.uri)
        digest = hashlib.sha256(data).hexdigest()
        if digest != ref.digest:  # read once more: a short read is not a damaged artifact
            data = self.read_bytes(ref.uri)
            digest = hashlib.sha256(data).hexdigest()
        if digest != ref.digest:
            raise IntegrityError(
                f"artifact {ref.uri}: SHA-256 is {digest}, checkpoint says {ref.digest}; "
                "run `winnow verify --full` and rerun to recompute it"
            )
        return formats.decode(data, ref.format)

    def check(
        self, ref: ArtifactRef, *, full: bool = False, listing: Mapping[str, int] | None = None
    ) -> ArtifactProblem | None:
        """Is this committed artifact still good? ``None`` when it is, else why not.

        The one answer that ``plan`` (before it skips a batch) and ``verify``
        both use. Quick (the default): the store lists the artifact with the
        size its reference records. ``full``: it is also read back, re-hashed
        and decoded (:meth:`verify`).

        Args:
            ref: the artifact's reference, as its checkpoint records it.
            full: re-hash and decode instead of comparing the size.
            listing: digests and sizes from :meth:`sizes`, one listing shared
                by many quick checks; listed now when not given. Unused by a
                full check.
        """
        if full:
            try:
                self.verify(ref)
            except IntegrityError as exc:
                return ArtifactProblem(Fault.UNVERIFIED, str(exc))
            return None
        size = (self.sizes() if listing is None else listing).get(ref.digest)
        if size is None:
            return ArtifactProblem(Fault.MISSING, f"artifact {ref.uri} is missing")
        if size != ref.bytes:
            return ArtifactProblem(
                Fault.WRONG_SIZE, f"artifact {ref.uri}: bytes {size} != {ref.bytes}"
            )
        return None

    @staticmethod
    def listed(ref: Mapping[str, Any], listing: Mapping[str, int]) -> bool:
        """Whether a reference, as a checkpoint stores it, passes :meth:`check`'s quick test.

        True when ``listing`` holds its digest with the size it records: then
        ``check(ArtifactRef(**ref), listing=listing)`` is None. False
        says nothing more (ask :meth:`check` why). For planning 100,000
        batches: no ``ArtifactRef`` is built for an artifact that is fine.
        """
        return ref.keys() == _REF_FIELDS and listing.get(ref["digest"]) == ref["bytes"]

    def verify(self, ref: ArtifactRef) -> ArtifactRef:
        """Read the artifact back, re-hash it and decode it; check bytes, records and schema."""
        return self._verify_path(self.path_of(ref.uri), ref)

    def _verify_path(
        self, path: str, ref: ArtifactRef, written: bytes | None = None
    ) -> ArtifactRef:
        """Read ``path`` back and check it against ``ref``.

        ``written``: the bytes just written, whose SHA-256 is ``ref.digest``.
        What is read back is then compared with them byte for byte, which
        proves the same digest as hashing it again at a fraction of the cost;
        a mismatch is hashed to name it. The bytes are then the serializer's
        own, so their record count and schema are read from the format's
        footer (a full decode would re-check the serializer, not storage).
        Without ``written`` (``verify``), they are re-hashed and fully decoded.
        """
        refresh(self.fs, path)
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            raise IntegrityError(f"artifact {ref.uri} is missing") from None
        problems = []
        if len(data) != ref.bytes:
            problems.append(f"bytes {len(data)} != {ref.bytes}")
        if written is not None and data == written:
            digest = ref.digest
        else:
            digest = hashlib.sha256(data).hexdigest()
        if digest != ref.digest:
            problems.append(f"sha256 {digest[:12]}… != {ref.digest[:12]}…")
        decoded = None
        if not problems:
            decoded = formats.check(data, ref.format, full=written is None)
            if decoded.records != ref.records:
                problems.append(f"records {decoded.records} != {ref.records}")
            if ref.schema_fp and decoded.schema_fp != ref.schema_fp:
                problems.append(f"schema {decoded.schema_fp} != {ref.schema_fp}")
        if problems:
            raise IntegrityError(f"artifact {ref.uri}: {'; '.join(problems)}")
        assert decoded is not None
        return ArtifactRef(
            uri=ref.uri,
            digest=digest,
            bytes=len(data),
            records=decoded.records,
            schema_fp=decoded.schema_fp,
            format=ref.format,
        )

    def sizes(self) -> dict[str, int]:
        """Every published artifact's digest and size, in one listing."""
        out = {}
        for name, size in name_sizes(self.fs, join(self.root, PUBLISHED)):
            digest = name.partition(".")[0]
            if is_digest(digest):
                out[digest] = size
        return out

    def _exists(self, path: str) -> bool:
        refresh(self.fs, path)
        return bool(self.fs.exists(path))

    def files(self, temporary: bool = False) -> list[StoredFile]:
        """Every file the store published, or (``temporary``) its unfinished writes.

        A fresh listing of every file there whatever its name (:meth:`sizes`
        keeps only artifact names, and may answer from a cached listing).
        """
        base = join(self.root, TEMPORARY if temporary else PUBLISHED)
        refresh(self.fs, base)
        try:
            listing = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        return [
            StoredFile(
                path=path,
                digest=posixpath.basename(path).partition(".")[0],
                bytes=int(info.get("size") or 0),
                modified=modified_at(info),
            )
            for path, info in listing.items()
        ]

    def remove(self, path: str) -> None:
        """Remove one file :meth:`files` found (``winnow gc``).

        As the filesystem's ``rm_file`` does: a local disk raises
        ``FileNotFoundError`` for one already gone.
        """
        self.fs.rm_file(path)

    def open(self, ref: ArtifactRef) -> Any:
        """The artifact's bytes as a binary file, unverified.

        For reading a Parquet footer without the whole file; :meth:`read`
        verifies.
        """
        return self.fs.open(self.path_of(ref.uri), "rb")

    def _discard(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def _write(self, path: str, data: bytes) -> None:
        self._in_folder(path, lambda: self.fs.pipe_file(path, data))

    def _publish(self, tmp: str, final: str) -> None:
        self._in_folder(final, lambda: self.fs.mv(tmp, final))

    def _in_folder(self, path: str, write: Any) -> None:
        """Run ``write``; on a local disk whose folder for ``path`` is missing, make it once.

        The shard folders exist after the first few hundred artifacts, so
        asking first would cost two calls per artifact for nothing.
        """
        try:
            write()
        except FileNotFoundError:
            if not is_local(self.fs):
                raise
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            write()


def dataset(refs: list[ArtifactRef], storage_options: dict[str, Any] | None = None) -> Any:
    """A ``pyarrow.dataset.Dataset`` over these artifacts, in order.

    Read lazily and unverified, through the last one's filesystem and in its
    format.

    The artifacts may lie in several stores (a rerun with another output keeps
    the batches it skipped where they were); each path is its own store's.
    """
    import pyarrow.dataset as ds

    opened: dict[str, ArtifactStore] = {}
    stores = [ArtifactStore.for_uri(ref.uri, storage_options, opened) for ref in refs]
    paths = [store.path_of(ref.uri) for store, ref in zip(stores, refs, strict=True)]
    fmt = formats.DATASET_FORMATS[refs[-1].format]
    return ds.dataset(paths, format=fmt, filesystem=stores[-1].fs)
