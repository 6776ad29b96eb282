"""``python -m winnow``: the same CLI as the ``winnow`` script (what a Ray job runs)."""

from winnow.cli import main

main()
