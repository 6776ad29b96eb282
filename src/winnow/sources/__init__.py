"""Sources: reading inputs.

Files, globs and folders on any fsspec URL are discovered (``discover``) and
split into deterministic batches (``files``); each format has its reader
(``jsonl``, ``csvfile``; Parquet and Arrow IPC through pyarrow), ``zstd``
notices a compressed stream cut short, and ``conform`` fits rows to the
pipeline's schema, setting aside the ones that do not fit. ``memory`` turns
data in memory (an Arrow table, a DataFrame, a Ray or Hugging Face dataset)
into input files: content-addressed chunks in the artifact store.
"""

from winnow.sources.discover import SourceFile, changed_since, detect, discover
from winnow.sources.files import (
    READER_VERSION,
    SourceBatch,
    check_schema,
    file_stats,
    range_readable,
    read,
    reader_fingerprint,
    split,
)
from winnow.sources.jsonl import BadRecord

__all__ = [
    "READER_VERSION",
    "BadRecord",
    "SourceBatch",
    "SourceFile",
    "changed_since",
    "check_schema",
    "detect",
    "discover",
    "file_stats",
    "range_readable",
    "read",
    "reader_fingerprint",
    "split",
]
