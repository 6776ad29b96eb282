"""Storage: fsspec, artifacts, checkpoints, job records and the event journal.

Nothing outside this package knows which fsspec backend is in use.
"""
