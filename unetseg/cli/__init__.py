"""The command line; ``main`` is the ``unetseg`` entry point."""

from unetseg.cli.main import main

__all__ = ["main"]
