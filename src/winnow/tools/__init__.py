"""The tools around a run.

Status, inspect, verify, gc, invalidate, export, quarantine, explore, report
and plots. They read the state through ``storage/`` and work the same on a
local disk and on object storage; the CLI prints what they return.
"""
