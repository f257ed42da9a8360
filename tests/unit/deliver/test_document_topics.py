"""A legal document's feeds are WebSub topics; one no bulletin ever cited is refused like an
unknown agency."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from services.deliver.subscriptions import listing_exists
from services.deliver.topics import parse_topic, topics_of
from shared.db import create_schema, engine_for, session_scope
from shared.models import LegalDocument
from shared.settings import Settings
from shared.site import document

PUBLIC = "https://tin.example"


def test_document_feeds_are_topics_of_known_documents(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    create_schema(settings)
    with session_scope(settings) as session:
        session.add(LegalDocument(key="qd-ttg-628-2020", doc_type="Quyết định", number="628",
                                  year=2020, issuer="QĐ-TTg", name="Quyết định số 628/QĐ-TTg",
                                  issued_on=None))  # fmt: skip
    known, unknown = document("qd-ttg-628-2020"), document("qd-ttg-629-2020")
    for fmt, topic in topics_of(PUBLIC, known).items():
        assert parse_topic(PUBLIC, topic) == (known, fmt)
    with Session(engine_for(settings)) as session:
        assert listing_exists(session, known)
        assert not listing_exists(session, unknown)
    for bad in ("document/.rss", "document/QD-628.rss", "document/a/b.atom", "documents.rss"):
        assert parse_topic(PUBLIC, f"{PUBLIC}/feeds/{bad}") is None, bad
