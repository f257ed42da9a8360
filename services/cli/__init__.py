"""The `bantin` command. One module per command group; each is imported only when the
command line is built, and each command imports what it needs when it runs (a `bantin
--help` must not load SQLAlchemy, Celery and the render templates)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import click


def _version() -> str:
    try:
        return version("bantin")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@click.group()
@click.version_option(
    _version(), "--version", "-V", prog_name="bantin", message="%(prog)s %(version)s"
)
def main() -> None:
    """Bantin: publish official bulletins as pages and feeds within a second."""


def _register() -> None:
    from services.cli import agency, db, publish, rebuild, status, up, workers

    for module in (up, workers, agency, publish, status, db, rebuild):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
