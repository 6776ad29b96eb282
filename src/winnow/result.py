"""What ``winnow.run`` returns: a job's outcome, and its output to read.

The job record (``state/jobs/<id>.json``, what ``winnow run --json``
summarizes) stays the stored form; :class:`RunResult` is its typed view for
Python and notebooks, with the record itself at :attr:`RunResult.record`.
``winnow.output(job_id)`` gives the same view of any finished job in a state.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from winnow import extras
from winnow.errors import UsageError
from winnow.execution.outcome import StageCounts
from winnow.records import JobStatus

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from winnow.storage.artifacts import ArtifactRef


@dataclass(frozen=True)
class RunResult:
    """One job's outcome, with its output readable as Arrow, pandas, a Ray or HF Dataset.

    Args:
        job_id: the job's id (``winnow inspect job ID``, ``winnow report ID``).
        pipeline: the pipeline's name.
        status: how the job ended (``SUCCEEDED``, ``FAILED``, ``CANCELLED``).
        counts: per stage in pipeline order, its batches by fate, rows and time.
        rows_in: rows read from the inputs (bad records included).
        rows_out: rows the last stage put out.
        bad_records: records quarantined or skipped as unreadable.
        wall_s: the job's wall time in seconds.
        manifest: the run manifest's URL (the final stage's artifacts in source
            order), or None when the job stopped before writing one.
        output_url: where the job's artifacts and manifests are.
        record: the whole job record, as stored and as ``winnow.run``
            returned it before this type existed.
        storage_options: for reading the output (the profile's; not shown).
        address: the Ray cluster the job ran on, where ``to_ray_dataset``
            attaches (None: ``RAY_ADDRESS`` or an embedded local Ray).
    """

    job_id: str
    pipeline: str
    status: JobStatus
    counts: Mapping[str, StageCounts]
    rows_in: int
    rows_out: int
    bad_records: int
    wall_s: float
    manifest: str | None
    output_url: str
    record: Mapping[str, Any] = field(repr=False, compare=False)
    storage_options: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    address: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        storage_options: Mapping[str, Any] | None = None,
        address: str | None = None,
    ) -> RunResult:
        """The result of a finished job from its record (``State.read_job`` gives one).

        Args:
            record: the job record.
            storage_options: for reading its output (secrets are masked in the
                record, so they are passed here).
            address: the Ray cluster for ``to_ray_dataset``.
        """
        counts = record.get("counts") or {}
        return cls(
            job_id=record["job_id"],
            pipeline=record["pipeline"],
            status=JobStatus(record["status"]),
            counts={name: StageCounts(**c) for name, c in counts.items()},
            rows_in=int(record.get("rows_in") or 0),
            rows_out=int(record.get("rows_out") or 0),
            bad_records=int(record.get("bad_records") or 0),
            wall_s=float(record.get("wall_s") or 0.0),
            manifest=record.get("manifest"),
            output_url=record["output_url"],
            record=record,
            storage_options=dict(storage_options or {}),
            address=address,
        )

    @property
    def ok(self) -> bool:
        """Whether the job succeeded: every batch made it through every stage."""
        return self.status == JobStatus.SUCCEEDED

    def artifacts(self) -> list[ArtifactRef]:
        """The final stage's artifacts, in source order, as the run manifest lists them.

        Raises:
            UsageError: the job has no manifest (it stopped before the end).
        """
        from winnow.storage.manifests import output_refs

        self._check_manifest()
        return output_refs(dict(self.record), dict(self.storage_options))

    def to_arrow(self) -> pa.Table:
        """The output as one ``pyarrow.Table`` in source order, each artifact re-hashed as read.

        Raises:
            UsageError: the job has no manifest.
            IntegrityError: an artifact is not what its checkpoint recorded.
        """
        from winnow.storage.manifests import output_table

        self._check_manifest()
        return output_table(dict(self.record), dict(self.storage_options))

    def to_pandas(self) -> Any:
        """The output as a ``pandas.DataFrame`` in source order (read as :meth:`to_arrow`).

        Raises:
            UsageError: pandas is not installed, or the job has no manifest.
        """
        if importlib.util.find_spec("pandas") is None:
            raise UsageError(
                "RunResult.to_pandas needs pandas, which is not installed. "
                "Fix: pip install pandas (or pip install 'winnow[notebook]'), "
                "or use to_arrow()"
            )
        return self.to_arrow().to_pandas()

    def to_ray_dataset(self) -> ray.data.Dataset:
        """The output as a lazy ``ray.data.Dataset``, its artifacts read by Ray's workers.

        Each artifact is read (and re-hashed) by a Ray Data task; its rows never
        pass through this process. Connects to Ray if this process is not
        (``address``, else an embedded local Ray that stays up while the
        dataset is used).

        Raises:
            UsageError: the job has no manifest.
        """
        from winnow.execution.datasets import ray_dataset

        dataset: ray.data.Dataset = ray_dataset(
            self.artifacts(), dict(self.storage_options), self.address
        )
        return dataset

    def to_hf(self) -> Any:
        """The output as a Hugging Face ``datasets.Dataset`` (in memory, read as :meth:`to_arrow`).

        Raises:
            UsageError: the ``hf`` extra (``datasets``) is not installed, or the
                job has no manifest.
        """
        hf = extras.require("datasets", "RunResult.to_hf")
        table = hf.table.InMemoryTable(self.to_arrow())
        return hf.Dataset(table)

    def _check_manifest(self) -> None:
        if not self.manifest:
            raise UsageError(
                f"job {self.job_id} has no output manifest (status {self.status}): it stopped "
                f"before the end; see `winnow inspect job {self.job_id}`, fix the cause and rerun"
            )


def output(
    job: str | RunResult,
    state: str | None = None,
    storage_options: Mapping[str, Any] | None = None,
    address: str | None = None,
) -> RunResult:
    """A finished job's output, to read with ``to_arrow()``, ``to_pandas()``, ``to_ray_dataset()`` or ``to_hf()``.

    Args:
        job: a job id (``winnow jobs`` lists them) or a ``RunResult`` (given back as is).
        state: the state root URL (default ``$WINNOW_STATE`` or ``.winnow/state/v1``).
        storage_options: for reading the state and the output (secrets are
            masked in the job record, so they are passed here).
        address: the Ray cluster ``to_ray_dataset`` attaches to.

    Raises:
        StateError: the state has no such job.
        UsageError: the job has not run yet.
    """
    if isinstance(job, RunResult):
        return job
    from winnow.storage.state import State, default_state_url

    options = dict(storage_options or {})
    record = State(state or default_state_url(), options).read_job(job)
    if not record.get("output_url"):
        raise UsageError(
            f"job {job} has not run yet (status {record.get('status')}): it has no output; "
            f"wait for it (`winnow status`) and ask again"
        )
    return RunResult.from_record(record, options, address)
