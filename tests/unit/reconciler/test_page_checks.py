"""The reconciler checks a pass's pages in one batched call, and a store that cannot answer
fails the pass instead of passing every page for missing (which would re-render the site)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import select, update

from services.reconciler.loop import verify_pages
from shared.db import create_schema, session_scope
from shared.models import Agency, Bulletin, BulletinStatus, utcnow
from shared.settings import Settings
from shared.site import article_path, file_for
from shared.storage import LocalStorage, S3Storage

PAGES = 30


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path)
    create_schema(settings)
    with session_scope(settings) as session:
        agency = Agency(slug="so-y-te", name="Sở Y tế")
        session.add(agency)
        session.flush()
        session.add_all(
            Bulletin(agency_id=agency.id, slug=f"b-{i}", title=f"Bản tin {i}",
                     body_format="text", body_source="b", body_html="<p>b</p>",
                     status=BulletinStatus.PUBLISHED, revision=1, rendered_revision=1,
                     published_at=utcnow())
            for i in range(PAGES)
        )  # fmt: skip
        session.flush()
        session.execute(update(Bulletin).values(pending_since=None))  # rendered: none owed
    return settings


def pages(settings: Settings) -> list[PurePosixPath]:
    with session_scope(settings) as session:
        rows = session.execute(select(Bulletin.id, Bulletin.slug)).all()
    return [file_for(article_path("so-y-te", slug, id_)) for id_, slug in rows]


def owed(settings: Settings) -> int:
    with session_scope(settings) as session:
        return len(
            session.scalars(select(Bulletin.id).where(Bulletin.pending_since.isnot(None))).all()
        )


class CountingStorage(LocalStorage):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.batches: list[int] = []
        self.singles = 0

    def exists(self, relative: PurePosixPath | str) -> bool:
        self.singles += 1
        return super().exists(relative)

    def exists_many(self, relatives: Iterable[PurePosixPath | str]) -> set[str]:
        asked = list(relatives)
        self.batches.append(len(asked))
        return {str(relative) for relative in asked if LocalStorage.exists(self, relative)}


def runtime(settings: Settings, storage: Any) -> Any:
    # No Redis or Celery: with every page in place there is nothing to send.
    return SimpleNamespace(settings=settings, storage=storage)


def test_a_pass_checks_its_pages_in_one_batch(settings: Settings, tmp_path: Path) -> None:
    storage = CountingStorage(tmp_path / "site")
    for page in pages(settings):
        storage.put(page, b"<p>b</p>")
    assert verify_pages(runtime(settings, storage)) == 0
    assert storage.batches == [PAGES] and storage.singles == 0


def test_pages_in_a_bucket_are_found(settings: Settings, s3_storage_url: str) -> None:
    store = S3Storage.from_url(s3_storage_url)
    for page in pages(settings):
        store.put(page, b"<p>b</p>")
    assert verify_pages(runtime(settings, store)) == 0
    assert owed(settings) == 0


def test_a_bucket_that_is_gone_fails_the_pass_and_repairs_nothing(
    settings: Settings, s3_storage_url: str
) -> None:
    gone = S3Storage.from_url(s3_storage_url.replace("s3://bantin-", "s3://gone-", 1))
    with pytest.raises(ClientError):
        verify_pages(runtime(settings, gone))
    assert owed(settings) == 0  # no page taken for missing, no render owed
