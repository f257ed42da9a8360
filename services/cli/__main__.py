"""`python -m services.cli`: the `bantin` command, as the supervisor starts its children."""

from services.cli import main

main()
