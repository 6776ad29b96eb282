"""The ``winnow`` command line: every click command lives in this package.

``main`` (the console script) maps Winnow's error types to exit codes in one
place; ``python -m winnow.cli`` runs it too.
"""

from winnow.cli.app import cli, main

__all__ = ["cli", "main"]
