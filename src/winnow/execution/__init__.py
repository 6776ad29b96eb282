"""Execution on Ray: actor pools, streaming batches, and the driver loop."""
