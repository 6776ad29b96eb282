"""Storage: fsspec, artifacts, checkpoints, job records and the event journal.

Nothing outside this package knows which fsspec backend is in use.
"""

import fsspec

# `faulty://` (storage/faults.py) injects storage faults for chaos tests. The
# registration is by name, so nothing is imported until a URL uses it.
fsspec.register_implementation("faulty", "winnow.storage.faults.FaultyFileSystem", clobber=True)
