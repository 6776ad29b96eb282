"""Ray actors: source readers and stage workers.

Each is a thin Ray shell around the code the local executor runs in the
driver: a ``SourceReader`` is ``reading.SourceStreams`` (keeping streams open
between calls), a ``StageWorker`` is ``processing.StageProcessor`` (one stage
instance, ``setup()`` once). The shell adds what only an actor has: a
``ready`` probe, its Ray node id, Ray's metrics and GPU sampling. A stage
worker's output batch stays in Ray's object store for the next stage.
"""

from __future__ import annotations

import ray

from winnow.execution import telemetry
from winnow.execution.processing import StageProcessor
from winnow.execution.reading import SourceStreams
from winnow.records import StageResult
from winnow.stage import Stage
from winnow.storage.artifacts import ArtifactStore


class SourceReader(SourceStreams):
    """A reader actor: streams source files, keeping open streams between calls."""

    def ready(self) -> str:
        """The Ray node this reader runs on; answering at all means the actor is up."""
        return ray.get_runtime_context().get_node_id()


class StageWorker(StageProcessor):
    """One actor of a stage's pool."""

    def __init__(self, stage: Stage, store: ArtifactStore, fmt: str, compression: str) -> None:
        super().__init__(stage, store, fmt, compression, ray.get_runtime_context().get_node_id())
        gpus = ray.get_gpu_ids()
        self.gpu_sampler = telemetry.GpuSampler(stage.stage_name, gpus) if gpus else None
        if self.gpu_sampler is not None:
            self.gpu_sampler.start()

    def ready(self) -> str:
        """The Ray node this worker runs on; answering means the stage's ``setup()`` succeeded."""
        return ray.get_runtime_context().get_node_id()

    def observe(self, result: StageResult) -> None:
        """Record one batch's result in Ray's metrics for this stage."""
        telemetry.record_batch(self.stage.stage_name, result, self.bytes_in)

    def shutdown(self) -> None:
        """Stop sampling the GPUs and run the stage's ``teardown()``."""
        if self.gpu_sampler is not None:
            self.gpu_sampler.close()
        self.teardown()
