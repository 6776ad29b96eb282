"""One batch on its way through the stages: what the driver knows of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from winnow.plan import BatchPlan


@dataclass
class Flight:
    """One batch on its way through the stages.

    Attributes:
        order: its place in the plan (and in the run manifest).
        plan: its plan: keys, actions and prior checkpoints per stage.
        stage: the stage it is queued for or running at.
        data: that stage's input: a batch (on Ray, an object ref of one), a
            ``SourceRange``, or ``{"artifact": ...}`` for a stage to read from
            the store; in-process, the exception of a source read that failed.
        meta: the ``SourceMeta`` (on Ray, an object ref of it) of a batch a
            reader read (stage 0 only).
        attempts: per stage, the attempts made so far (prior runs' included).
        input_artifact: the committed artifact this stage's input came from:
            a retry reads it back instead of an object ref that may have died
            with its node.
        reader: the reader actor that read a stage-0 input (None in-process).
        rows: per stage, its row counts once committed (None: not finished).
        infra: failures of the cluster (an actor or node lost), not of the batch.
        epoch: how many stage results of this batch were committed; a task sent
            in an earlier epoch (a straggler whose speculative twin won) is stale
            and its late result is discarded.
    """

    order: int
    plan: BatchPlan
    stage: int = 0
    data: Any = None
    meta: Any = None
    attempts: dict[int, int] = field(default_factory=dict)
    input_artifact: dict[str, Any] | None = None
    reader: int | None = None
    rows: dict[int, dict[str, Any] | None] = field(default_factory=dict)
    infra: int = 0
    epoch: int = 0
