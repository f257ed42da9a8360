from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.cli.client import PublishError, parse_text_bulletin

VN = ZoneInfo("Asia/Ho_Chi_Minh")
SEED = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"


def test_the_seed_sample_parses_into_its_parts() -> None:
    if not SEED.exists():
        pytest.fail(f"seed sample missing at {SEED}")
    bulletin = parse_text_bulletin(SEED.read_text(encoding="utf-8"), VN)
    assert bulletin["published_at"] == "2020-07-31T00:00:00+07:00"
    assert bulletin["title"].startswith("Ban hành Kế hoạch hành động thực hiện Quyết định số 628")
    assert bulletin["summary"].startswith("Ngày 30/7/2020, UBND tỉnh ban hành")
    assert bulletin["author"] == "Hồng Nhung"
    paragraphs = bulletin["body"].split("\n\n")
    assert paragraphs[0].startswith("Theo đó, Kế hoạch đề ra 6 nhiệm vụ")
    assert paragraphs[-1].endswith("giáo dục và đào tạo./.")
    assert len(paragraphs) == 8  # "Theo đó", six tasks, "Tại Kế hoạch"
    assert "PublishingPortal" not in bulletin["body"] and "Tăng cỡ chữ" not in bulletin["body"]


def test_a_plain_file_is_title_then_paragraphs() -> None:
    bulletin = parse_text_bulletin("Thông báo nghỉ lễ\n\nCơ quan nghỉ lễ ngày 2/9.\n", VN)
    assert bulletin == {
        "body_format": "text",
        "title": "Thông báo nghỉ lễ",
        "body": "Cơ quan nghỉ lễ ngày 2/9.",
    }


def test_a_file_without_body_is_refused() -> None:
    with pytest.raises(PublishError):
        parse_text_bulletin("31/07/2020\nChỉ có tiêu đề\n", VN)
