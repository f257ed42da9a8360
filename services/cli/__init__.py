"""The `bantin` command. One module per command group; each is imported only when the
command line is built, and each command imports what it needs when it runs (a `bantin
--help` must not load SQLAlchemy, Celery and the render templates)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import click


def _version() -> str:
    try:
        return version("bantin")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


class _Bantin(click.Group):
    """Every command reads BANTIN_* settings: a bad value is one clear error naming it, the
    same for every command, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from pydantic import ValidationError

        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            if exc.title != "Settings":
                raise
            raise click.ClickException(f"invalid settings: {exc}") from None


@click.group(cls=_Bantin)
@click.version_option(
    _version(), "--version", "-V", prog_name="bantin", message="%(prog)s %(version)s"
)
def main() -> None:
    """Bantin: publish official bulletins as pages and feeds within a second."""


def _register() -> None:
    from services.cli import agency, db, publish, rebuild, status, up, user, workers

    for module in (up, workers, agency, user, publish, status, db, rebuild):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
