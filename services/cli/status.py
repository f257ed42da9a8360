"""`bantin status`: what is running and how far behind it is, for a person or a script."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
