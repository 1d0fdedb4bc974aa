"""The argument parser of a `scripts/bench NAME` subcommand."""

from __future__ import annotations

import argparse


def subcommand_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser for `scripts/bench NAME`, its help the module's docstring as written."""
    return argparse.ArgumentParser(
        prog=f"scripts/bench {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
