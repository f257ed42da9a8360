"""`GET /v1/bulletins/{id}` through the running system (issue 12): the citations the render
step stored for the live revision, as the published page shows them, following corrections
and gone once withdrawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import lxml.html

from services.cli.client import load_bulletin
from shared.testing import System
from tests.integration.consistency import new_agency, reader, token, wait_settled

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "000_4fbfac1c975a2018.txt"
# The sample's documents in order of first mention: the title, the lead, then the body.
SAMPLE_KEYS = ["qd-ttg-628-2020", "kl-tw-51-2019", "qd-ubnd-1385", "nq-tw-29", "nq-cp-44-2014"]


def cited_on_page(url: str) -> list[str]:
    """The document pages the article's "Văn bản được nhắc đến" list links, in order."""
    page = lxml.html.fromstring(reader().get(url).content)
    return [urlsplit(h).path for h in page.xpath('//section[@class="cited"]//a/@href')]


def test_the_api_reports_the_live_revisions_citations(system: System) -> None:
    _slug, key = new_agency(system, "UBND tỉnh Bắc Kạn")
    sample = load_bulletin(SAMPLE, ZoneInfo("Asia/Ho_Chi_Minh"))
    sample["title"] = f"{sample['title']} {token()}"
    with system.api(key) as api:
        answer = api.post("/v1/bulletins", json=sample)
        assert answer.status_code == 202, answer.text
        bulletin_id = answer.json()["id"]
        status: dict[str, Any] = wait_settled(api, [bulletin_id])[bulletin_id]
        assert status["status"] == "published"

        citations = status["citations"]
        assert [c["key"] for c in citations] == SAMPLE_KEYS
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(status["url"]))
        assert [c["url"] for c in citations] == [f"{origin}/van-ban/{k}/" for k in SAMPLE_KEYS]
        assert citations[0] == {
            "key": "qd-ttg-628-2020",
            "name": "Quyết định số 628/QĐ-TTg",
            "title": "Quyết định số 628/QĐ-TTg ngày 11/05/2020",
            "type": "Quyết định",
            "number": "628",
            "year": 2020,
            "issuer": "QĐ-TTg",
            "issued_on": "2020-05-11",
            "url": f"{origin}/van-ban/qd-ttg-628-2020/",
        }
        # What the agency is told is what the page links.
        assert cited_on_page(status["url"]) == [f"/van-ban/{k}/" for k in SAMPLE_KEYS]

        # A correction citing one document only (its title cites none): the API follows once
        # its page is live.
        correction = {
            "title": f"Thông báo {token()}",
            "body": "Thực hiện Nghị quyết 44/NQ-CP ngày 09/6/2014 của Chính phủ.",
        }
        answer = api.put(f"/v1/bulletins/{bulletin_id}", json=correction)
        assert answer.status_code == 202, answer.text
        corrected = wait_settled(api, [bulletin_id])[bulletin_id]
        assert corrected["rendered_revision"] == corrected["revision"] == 2
        assert [c["key"] for c in corrected["citations"]] == ["nq-cp-44-2014"]
        assert cited_on_page(corrected["url"]) == ["/van-ban/nq-cp-44-2014/"]

        # Withdrawn: it cites nothing any more.
        assert api.delete(f"/v1/bulletins/{bulletin_id}").status_code == 202
        withdrawn = wait_settled(api, [bulletin_id])[bulletin_id]
        assert withdrawn["status"] == "withdrawn" and withdrawn["citations"] == []
