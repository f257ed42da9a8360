"""The sample bulletins shipped in examples/ are what the README tells a newcomer to publish:
each must parse and pass the API's own validation, or the first command they run fails."""

from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from services.cli.client import load_bulletin
from services.ingest.schemas import BulletinCreate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".txt", ".json"})


def test_the_examples_are_shipped() -> None:
    names = {p.name for p in FILES}
    assert "000_4fbfac1c975a2018.txt" in names  # the README's publish command uses it
    assert len(names) >= 4, names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_example_is_a_valid_submission(path: Path) -> None:
    bulletin = load_bulletin(path, ZoneInfo("Asia/Ho_Chi_Minh"))
    try:
        accepted = BulletinCreate.model_validate(bulletin)
    except ValidationError as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(f"{path.name} would be refused by the API: {exc}")
    assert accepted.title and accepted.body
    assert "PublishingPortal" not in accepted.body and "Tăng cỡ chữ" not in accepted.body


def test_every_example_is_listed_in_its_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in FILES if f"`{p.name}`" not in readme]
    assert missing == []
