"""The README is the operator's manual: it must keep up with the code."""

from pathlib import Path

from shared.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [f"BANTIN_{name.upper()}" for name in Settings.model_fields
               if f"BANTIN_{name.upper()}" not in README]  # fmt: skip
    assert missing == []


def test_the_quickstart_comes_first_with_the_two_commands() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert README.index("## Quickstart") < README.index("## How it fits together")
    assert "make run" in quickstart and "make test" in quickstart
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    # CI runs exactly the README's test command, then the compose test by its own documented
    # target (issue 13: it needs root and a Docker engine, which `make test` must not).
    commands = [line.strip() for line in ci.splitlines() if line.strip().startswith("make ")]
    assert commands == ["make test", "make compose-test"]
    assert "make compose-test" in README


def test_every_bantin_command_the_readme_shows_exists() -> None:
    """A newcomer copies these lines: each must name a real command (arguments unchecked)."""
    import re
    import shlex

    import click

    from services.cli import main

    shown = re.findall(r"^\s*(?:\.venv/bin/)?bantin ([a-z][^#\n]*)", README, re.MULTILINE)
    assert len(shown) >= 15, shown
    for line in shown:
        command: click.Command = main
        words = shlex.split(line.replace("$(", "").replace(")", ""))
        while isinstance(command, click.Group) and words and not words[0].startswith("-"):
            sub = command.get_command(click.Context(command), words.pop(0))
            assert sub is not None, f"README shows `bantin {line.strip()}`: no such command"
            command = sub
        assert not isinstance(command, click.Group), f"`bantin {line.strip()}` is a group"
