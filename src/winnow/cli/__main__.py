"""``python -m winnow.cli``: the ``winnow`` command."""

from winnow.cli.app import main

main()
