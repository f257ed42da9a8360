"""`GET /v1/bulletins/{id}` names the legal documents the bulletin's live page cites.

The citation rows are written by the render step (tested in tests/integration); here they
are inserted directly, as that step would, so the API's reading of them is tested alone: only
the rendered revision's rows, in order of first mention, none before the first render and
none once withdrawn.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from html import unescape
from typing import Any

import lxml.html
from fastapi.testclient import TestClient
from sqlalchemy import update

from shared.db import session_scope
from shared.models import Bulletin, BulletinStatus, Citation, LegalDocument
from shared.settings import Settings
from tests.unit.ingest.helpers import new_agency
from tests.unit.ingest.test_console import KEY, editor_fields, field, sign_up, token_of

PUBLISHED = datetime(2020, 7, 31, 1, 0, tzinfo=UTC)

DECISION = LegalDocument(
    key="qd-ttg-628-2020",
    doc_type="Quyết định",
    number="628",
    year=2020,
    issuer="QĐ-TTg",
    name="Quyết định số 628/QĐ-TTg",
    issued_on=date(2020, 5, 11),
)
CONCLUSION = LegalDocument(
    key="kl-tw-51-2019",
    doc_type="Kết luận",
    number="51",
    year=2019,
    issuer="KL/TW",
    name="Kết luận số 51-KL/TW",
    issued_on=date(2019, 5, 30),
)
RESOLUTION = LegalDocument(
    key="nq-tw-29",
    doc_type="Nghị quyết",
    number="29",
    year=None,
    issuer="NQ/TW",
    name="Nghị quyết số 29-NQ/TW",
    issued_on=None,
)


def _copy(doc: LegalDocument) -> LegalDocument:
    return LegalDocument(
        key=doc.key,
        doc_type=doc.doc_type,
        number=doc.number,
        year=doc.year,
        issuer=doc.issuer,
        name=doc.name,
        issued_on=doc.issued_on,
    )


def _submit(client: TestClient, auth: dict[str, str]) -> int:
    answer = client.post(
        "/v1/bulletins",
        json={
            "title": "Kế hoạch thực hiện Quyết định số 628/QĐ-TTg",
            "body": "Thực hiện Kết luận số 51-KL/TW và Nghị quyết số 29-NQ/TW.",
            "published_at": "2020-07-31T08:00:00+07:00",
        },
        headers=auth,
    )
    assert answer.status_code == 202, answer.text
    bulletin_id: int = answer.json()["id"]
    return bulletin_id


def _cite(settings: Settings, bulletin_id: int, revision: int, docs: list[LegalDocument]) -> None:
    """The rows a render of `revision` writes: the documents (once each), then one citation
    per document, `position` in order of first mention."""
    with session_scope(settings) as session:
        for doc in docs:
            if session.get(LegalDocument, doc.key) is None:
                session.add(_copy(doc))
        session.flush()
        for position, doc in enumerate(docs):
            session.add(
                Citation(
                    bulletin_id=bulletin_id,
                    revision=revision,
                    document_key=doc.key,
                    position=position,
                    published_at=PUBLISHED,
                )
            )


def _live(settings: Settings, bulletin_id: int, revision: int, status: BulletinStatus) -> None:
    """What a render that put `revision` live leaves on the row."""
    with session_scope(settings) as session:
        session.execute(
            update(Bulletin)
            .where(Bulletin.id == bulletin_id)
            .values(
                revision=revision,
                rendered_revision=revision,
                cited_revision=revision,
                status=status,
            )
        )


def _citations(client: TestClient, auth: dict[str, str], bulletin_id: int) -> list[Any]:
    answer = client.get(f"/v1/bulletins/{bulletin_id}", headers=auth)
    assert answer.status_code == 200, answer.text
    found: list[Any] = answer.json()["citations"]
    return found


def test_citations_are_the_live_revisions_in_order_of_mention(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    bulletin_id = _submit(client, auth)
    # Rows of revision 1 exist (a render wrote them) but the page is not live yet.
    _cite(settings, bulletin_id, 1, [RESOLUTION, DECISION, CONCLUSION])
    assert _citations(client, auth, bulletin_id) == []

    _live(settings, bulletin_id, 1, BulletinStatus.PUBLISHED)
    assert _citations(client, auth, bulletin_id) == [
        {
            "key": "nq-tw-29",
            "name": "Nghị quyết số 29-NQ/TW",
            "title": "Nghị quyết số 29-NQ/TW",
            "type": "Nghị quyết",
            "number": "29",
            "year": None,
            "issuer": "NQ/TW",
            "issued_on": None,
            "url": "http://127.0.0.1:8000/van-ban/nq-tw-29/",
        },
        {
            "key": "qd-ttg-628-2020",
            "name": "Quyết định số 628/QĐ-TTg",
            "title": "Quyết định số 628/QĐ-TTg ngày 11/05/2020",
            "type": "Quyết định",
            "number": "628",
            "year": 2020,
            "issuer": "QĐ-TTg",
            "issued_on": "2020-05-11",
            "url": "http://127.0.0.1:8000/van-ban/qd-ttg-628-2020/",
        },
        {
            "key": "kl-tw-51-2019",
            "name": "Kết luận số 51-KL/TW",
            "title": "Kết luận số 51-KL/TW ngày 30/05/2019",
            "type": "Kết luận",
            "number": "51",
            "year": 2019,
            "issuer": "KL/TW",
            "issued_on": "2019-05-30",
            "url": "http://127.0.0.1:8000/van-ban/kl-tw-51-2019/",
        },
    ]


def test_a_correction_shows_its_citations_once_its_page_is_live(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    bulletin_id = _submit(client, auth)
    _cite(settings, bulletin_id, 1, [DECISION, CONCLUSION])
    _live(settings, bulletin_id, 1, BulletinStatus.PUBLISHED)
    # Revision 2 drops the conclusion; its rows are written, the page still shows revision 1.
    _cite(settings, bulletin_id, 2, [DECISION])
    assert [c["key"] for c in _citations(client, auth, bulletin_id)] == [
        "qd-ttg-628-2020",
        "kl-tw-51-2019",
    ]
    _live(settings, bulletin_id, 2, BulletinStatus.PUBLISHED)
    assert [c["key"] for c in _citations(client, auth, bulletin_id)] == ["qd-ttg-628-2020"]


def test_a_withdrawn_bulletin_cites_nothing(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    bulletin_id = _submit(client, auth)
    _cite(settings, bulletin_id, 1, [DECISION])
    _live(settings, bulletin_id, 1, BulletinStatus.PUBLISHED)
    assert len(_citations(client, auth, bulletin_id)) == 1
    withdrawal = client.delete(f"/v1/bulletins/{bulletin_id}", headers=auth)
    assert withdrawal.status_code == 202, withdrawal.text
    # Withdrawn at once, before the withdrawal's own render: nothing is cited any more.
    assert _citations(client, auth, bulletin_id) == []


def test_the_openapi_document_describes_the_citations(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["BulletinPublic"]["properties"]["citations"]
    assert field["items"] == {"$ref": "#/components/schemas/CitationPublic"}
    citation = schemas["CitationPublic"]
    assert set(citation["properties"]) == {
        "key", "name", "title", "type", "number", "year", "issuer", "issued_on", "url",
    }  # fmt: skip
    assert citation["properties"]["issued_on"]["anyOf"][0] == {"type": "string", "format": "date"}


def test_the_console_preview_links_the_citations(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-gd")
    sign_up(client, settings, "so-gd", "gd@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields(
        title="Kế hoạch thực hiện Quyết định số 628/QĐ-TTg ngày 11/5/2020",
        body="Triển khai Quyết định 628 và Quyết định 1696 trên địa bàn tỉnh.",
    ) | {"csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text)}
    preview = client.post("/console/bulletins/new", data={**data, "action": "preview"})
    assert preview.status_code == 200, preview.text
    frame = lxml.html.document_fromstring(
        unescape(re.findall(r'srcdoc="([^"]*)"', preview.text)[0])
    )
    body_links = frame.xpath('//div[@class="article__body"]//a[@class="citation"]')
    assert [(a.text_content(), a.get("href")) for a in body_links] == [
        ("Quyết định 628", "/van-ban/qd-ttg-628-2020/")
    ]  # the unresolved "Quyết định 1696" stays plain text
    assert frame.xpath('//section[@class="cited"]//li/a/text()') == [
        "Quyết định số 628/QĐ-TTg ngày 11/05/2020"
    ]
