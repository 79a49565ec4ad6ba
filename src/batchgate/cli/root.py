"""The `batchgate` command group, on which each module's commands register."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="batchgate")
def main() -> None:
    """batchgate: an asynchronous batch gateway for RPC-style JSON APIs."""
