"""Rejoin stages: the pipeline's input read again, with what a barrier found.

A dataset-wide decision (which documents are near-duplicates, a vocabulary,
a model's statistics) is usually made over a small derived dataset
(signatures, edges, counts) by a grouping or global stage, and then applied
to the original rows. A ``Rejoin`` stage does the applying: once every batch
of the stage before it has committed, it runs once per *input* batch of the
pipeline, reading that batch again from the source, and receives the whole
output of the stage before it as its ``context`` (a broadcast join: the
context must fit in one worker's memory; the input is streamed).

Its batch key chains the input batch's key onto the digests of the context
artifacts, so a rerun skips every rejoin batch when neither the input batch
nor the context changed, and reruns them when the context did.

The rows it is given carry their source position (``_winnow_file``, the input
file's URL, and ``_winnow_row``, the row's number in it), numbered as a
grouping stage's map side numbers them: the same numbers when every stage
before that map side keeps its rows one for one (as ``fuzzy_dedup``'s
``minhash`` does). Columns named ``_winnow_*`` are dropped from its output.
Nothing here knows Ray or storage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from winnow.errors import ConfigError
from winnow.stage import Stage

if TYPE_CHECKING:
    from winnow.grouping import Reduced


class Rejoin(Stage):
    """Base class of a rejoin stage: ``rejoin(batch, context)`` per input batch, after a barrier.

    Subclasses set ``name`` and ``version``, override ``rejoin`` (and
    ``prepare`` to index the context once per worker); their dataclass fields
    are their parameters, as for any stage. A rejoin stage cannot be a
    pipeline's first stage: its context is the output of the stage before it.
    """

    def prepare(self, context: pa.Table) -> Any:
        """Index the context once per worker and run (default: the table itself).

        What it returns is handed to every ``rejoin`` call of the run.
        """
        return context

    def rejoin(self, batch: pa.RecordBatch, context: Any) -> pa.RecordBatch | pa.Table | Reduced:
        """One input batch (with source positions) and the prepared context -> its output.

        Return the rows to pass on, or ``Reduced(kept, removed)`` to also set
        rows aside (committed as a second artifact, ``winnow inspect removed``).
        """
        raise NotImplementedError(f"rejoin stage {self.stage_name!r} does not implement rejoin()")

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """A rejoin stage has no plain ``process``: it runs through ``rejoin``."""
        raise ConfigError(
            f"rejoin stage {self.stage_name!r} runs through rejoin(batch, context), "
            "never through process()"
        )
