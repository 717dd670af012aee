"""``python -m fedloom`` runs the ``fedloom`` command."""

from fedloom.cli import main

main()
