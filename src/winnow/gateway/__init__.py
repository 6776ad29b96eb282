"""The gateway: the long-running operations side (queue, scheduler, journal, snapshots)."""
