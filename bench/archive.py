"""A fast generator of a bulletin archive, straight into the database (no API, no renders).

    python -m bench.archive N [--data-dir DIR] [--agencies 20] [--categories 10]

`populate(settings, n)` adds N published bulletins, as if each had been submitted and
rendered once: status published, revision = rendered_revision = 1, nothing pending. Bodies
are ~2 KB of Vietnamese text (each one distinct), dates follow arrival order (1M bulletins
span ten years), most have a summary, half an author. Calling it again adds N more, newer,
under the same agencies and categories, so one database can grow 1k → 10k → 100k → 1M.

Citations too, as the render step would have stored them (issue 12): a pool of DOCUMENTS
legal documents, each bulletin citing 0–3 of them (named in full in its opening, so a
re-render extracts the same ones), and every POPULAR_EVERY-th bulletin also citing
POPULAR_KEY (Quyết định số 628/QĐ-TTg), whose citers grow with the archive: 50,000 at 1M.
Each citation row carries its bulletin's live revision and published_at; a document gets
its `documents` row when first cited, as in use.

The benchmarks use it to stand up a large archive in seconds; it writes rows only, so pages
and feeds of these bulletins exist only after a rebuild.
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.db import create_schema, engine_for
from shared.models import (
    Agency,
    BodyFormat,
    Bulletin,
    BulletinStatus,
    Category,
    Citation,
    LegalDocument,
)
from shared.settings import Settings

CHUNK = 10_000  # rows per executemany
CHUNKS_PER_TRANSACTION = 10  # 100k rows per commit: few commits, bounded WAL growth
ARCHIVE_START = datetime(2015, 1, 1, tzinfo=UTC)
# Bulletins arrive in time order, as on a real site: bulletin k is dated about k × 5 min
# after ARCHIVE_START (1M span 9.5 years), up to two days earlier (back-dated submissions).
# So the newest bulletins are the newest rows, and a page of newest-first ids is a run of
# neighbouring rows, as it would be in production (random dates would scatter every page
# of a rebuild over the whole table: 45 µs a row to read instead of 15, measured).
SECONDS_PER_BULLETIN = 300
BACKDATE_SECONDS = 2 * 24 * 3600
BODY_CHARS = 1_600  # ~2.1 KB of UTF-8 with Vietnamese diacritics
POOL = 512  # distinct bodies; a per-bulletin first paragraph makes every body unique
DOCUMENTS = 3_000  # legal documents bulletins cite (a province's working set over ten years)
# How many pool documents a bulletin cites: 0 to 3, 1.3 on average.
CITES_WEIGHTS = (25, 35, 25, 15)
# Every 20th bulletin (5%) also cites one decision: its document listing grows with the
# archive, which is what the feed-cost benchmark needs to show flat (50,000 citers at 1M).
POPULAR_EVERY = 20
POPULAR_KEY = "qd-ttg-628-2020"

AGENCY_NAMES = [
    "UBND tỉnh Bắc Kạn", "Sở Giáo dục và Đào tạo", "Sở Y tế", "Sở Tài chính",
    "Sở Kế hoạch và Đầu tư", "Sở Tài nguyên và Môi trường", "Sở Giao thông vận tải",
    "Sở Nông nghiệp và Phát triển nông thôn", "Sở Lao động – Thương binh và Xã hội",
    "Sở Văn hóa, Thể thao và Du lịch", "Sở Thông tin và Truyền thông", "Sở Tư pháp",
    "Sở Xây dựng", "Sở Công Thương", "Sở Khoa học và Công nghệ", "Sở Nội vụ",
    "Thanh tra tỉnh", "Ban Dân tộc tỉnh", "Bộ Chỉ huy Quân sự tỉnh", "Công an tỉnh",
]  # fmt: skip
CATEGORIES = [
    "Giáo dục", "Y tế", "Kinh tế", "Nông nghiệp", "Văn hóa – Xã hội", "Giao thông",
    "Môi trường", "Pháp luật", "An ninh – Quốc phòng", "Khoa học – Công nghệ",
]  # fmt: skip
AUTHORS = ["Hồng Nhung", "Minh Đức", "Thu Hà", "Văn Hải", "Thanh Tâm", "Quốc Khánh"]
TITLES = [
    "Ban hành Kế hoạch hành động thực hiện Quyết định của Thủ tướng Chính phủ",
    "Triển khai các giải pháp phòng, chống dịch bệnh trên địa bàn tỉnh",
    "Hội nghị tổng kết công tác năm và triển khai nhiệm vụ trọng tâm",
    "Tăng cường công tác quản lý nhà nước về tài nguyên khoáng sản",
    "Đẩy mạnh cải cách hành chính, nâng cao chỉ số năng lực cạnh tranh cấp tỉnh",
    "Hướng dẫn tổ chức kỳ thi tốt nghiệp trung học phổ thông",
    "Thông báo lịch tiếp công dân định kỳ của lãnh đạo tỉnh",
    "Phê duyệt đề án phát triển du lịch cộng đồng gắn với bảo tồn văn hóa",
]
SENTENCES = [
    "Theo đó, Kế hoạch đề ra sáu nhiệm vụ, giải pháp chủ yếu cần triển khai thực hiện.",
    "Tăng cường sự lãnh đạo, chỉ đạo và quản lý của cấp ủy, chính quyền các cấp.",
    "Nâng cao hiệu quả phối hợp giữa các sở, ngành và cả hệ thống chính trị.",
    "Đẩy mạnh công tác giáo dục lý tưởng cách mạng, đạo đức, lối sống văn hóa.",
    "Ủy ban nhân dân tỉnh giao các sở, ngành chủ trì, phối hợp tổ chức thực hiện.",
    "Các địa phương báo cáo kết quả thực hiện về Văn phòng Ủy ban nhân dân tỉnh.",
    "Kinh phí thực hiện được bố trí từ nguồn ngân sách nhà nước theo phân cấp hiện hành.",
    "Đổi mới căn bản, toàn diện giáo dục và đào tạo, đáp ứng yêu cầu công nghiệp hóa.",
    "Người dân có thể tra cứu thông tin trên Cổng thông tin điện tử của tỉnh.",
    "Trong quá trình thực hiện, nếu có khó khăn, vướng mắc, kịp thời báo cáo để xử lý.",
    "Sở Tài chính thẩm định dự toán, trình cấp có thẩm quyền phê duyệt theo quy định.",
    "Công tác tuyên truyền, phổ biến được thực hiện thường xuyên, sâu rộng đến nhân dân.",
    "Tổ chức kiểm tra, giám sát việc thực hiện tại các huyện, thành phố.",
    "Mục tiêu đến năm 2025, tỷ lệ hộ nghèo giảm bình quân từ 3 đến 4% mỗi năm.",
    "Ưu tiên nguồn lực cho vùng đồng bào dân tộc thiểu số và miền núi.",
    "Thực hiện nghiêm các quy định về phòng cháy, chữa cháy tại cơ sở.",
    "Bảo đảm an ninh chính trị, trật tự an toàn xã hội trên địa bàn.",
    "Chuyển đổi số được xác định là nhiệm vụ trọng tâm trong giai đoạn tới.",
    "Hồ sơ được tiếp nhận tại Trung tâm Phục vụ hành chính công của tỉnh.",
    "Thời gian thực hiện từ ngày ban hành đến hết ngày 31 tháng 12.",
]  # fmt: skip


def _paragraph(rng: random.Random) -> str:
    return " ".join(rng.choices(SENTENCES, k=rng.randint(2, 4)))


def _body_pool(rng: random.Random) -> list[tuple[str, str]]:
    """(text, html) bodies of ~BODY_CHARS, built once: made per row, they cost 23 µs each,
    23 s of a 1M load that takes ~65 s (measured); a per-row opening keeps them distinct."""
    pool = []
    for _ in range(POOL):
        paragraphs: list[str] = []
        while sum(len(p) for p in paragraphs) < BODY_CHARS:
            paragraphs.append(_paragraph(rng))
        pool.append(("\n\n".join(paragraphs), "".join(f"<p>{p}</p>\n" for p in paragraphs)))
    return pool


class PoolDocument(NamedTuple):
    """A document of the pool: its `documents` row values and how a bulletin cites it."""

    key: str
    doc_type: str
    number: str
    year: int
    issuer: str
    name: str
    issued_on: date
    cited_as: str  # "Quyết định số 628/QĐ-TTg ngày 11/5/2020": the full citation in a body


# (type, issuer code, numbers carry the year as in "15/2020/NĐ-CP"), as official texts write them
DOCUMENT_KINDS = [
    ("Quyết định", "QĐ-TTg", False), ("Quyết định", "QĐ-UBND", False),
    ("Nghị quyết", "NQ-CP", False), ("Nghị quyết", "NQ/TW", False),
    ("Nghị quyết", "NQ-HĐND", False), ("Nghị định", "NĐ-CP", True),
    ("Thông tư", "TT-BGDĐT", True), ("Thông tư", "TT-BTC", True), ("Thông tư", "TT-BYT", True),
    ("Chỉ thị", "CT-TTg", False), ("Chỉ thị", "CT-UBND", False), ("Kết luận", "KL/TW", False),
    ("Kế hoạch", "KH-UBND", False),
]  # fmt: skip
_ASCII = str.maketrans({"Đ": "D", "đ": "d", "/": "-"})


def _document(
    doc_type: str, issuer: str, number: int, issued_on: date, dated: bool
) -> PoolDocument:
    """One document, keyed as shared.citations keys it: issuer code slug, number, year."""
    year = issued_on.year
    slug = issuer.translate(_ASCII).lower()
    # Party documents join number and code with a hyphen ("29-NQ/TW"), the state's a slash.
    code = f"{number}-{issuer}" if "/" in issuer else f"{number}/{issuer}"
    if dated:
        code = f"{number}/{year}/{issuer}"
    name = f"{doc_type} số {code}"
    cited_as = f"{name} ngày {issued_on.day}/{issued_on.month}/{year}"
    return PoolDocument(f"{slug}-{number}-{year}", doc_type, str(number), year, issuer, name,
                        issued_on, cited_as)  # fmt: skip


POPULAR = _document("Quyết định", "QĐ-TTg", 628, date(2020, 5, 11), False)
assert POPULAR.key == POPULAR_KEY


def _document_pool(rng: random.Random) -> list[PoolDocument]:
    """DOCUMENTS distinct documents (POPULAR is kept apart: bulletins cite it by rule)."""
    pool: dict[str, PoolDocument] = {POPULAR.key: POPULAR}
    while len(pool) < DOCUMENTS + 1:
        doc_type, issuer, dated = rng.choice(DOCUMENT_KINDS)
        issued_on = date(rng.randint(2005, 2024), rng.randint(1, 12), rng.randint(1, 28))
        document = _document(doc_type, issuer, rng.randint(1, 2_000), issued_on, dated)
        pool.setdefault(document.key, document)
    del pool[POPULAR.key]
    return list(pool.values())


def _ensure_documents(conn: Connection, documents: list[PoolDocument]) -> None:
    """`documents` rows for these documents (ON CONFLICT DO NOTHING, as the render does)."""
    if not documents:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    rows = [
        {"key": d.key, "doc_type": d.doc_type, "number": d.number, "year": d.year,
         "issuer": d.issuer, "name": d.name, "issued_on": d.issued_on,
         "created_at": ARCHIVE_START}
        for d in documents
    ]  # fmt: skip
    for first in range(0, len(rows), CHUNK):
        statement = dialect.insert(LegalDocument).on_conflict_do_nothing(index_elements=["key"])
        conn.execute(statement, rows[first : first + CHUNK])


def _ensure_agencies(conn: Connection, count: int) -> list[tuple[int, str]]:
    """(id, name) of `count` archive agencies, created on first use (slug arch-NN)."""
    found = {}
    for row in conn.execute(select(Agency.id, Agency.slug, Agency.name)):
        found[row.slug] = (row.id, row.name)
    agencies = []
    for i in range(count):
        slug = f"arch-{i + 1:02d}"
        if slug not in found:
            name = AGENCY_NAMES[i % len(AGENCY_NAMES)]
            if i >= len(AGENCY_NAMES):
                name = f"{name} ({i // len(AGENCY_NAMES) + 1})"
            agency_id = conn.scalar(
                insert(Agency)
                .values(slug=slug, name=name, created_at=ARCHIVE_START)
                .returning(Agency.id)
            )
            found[slug] = (agency_id, name)
        agencies.append(found[slug])
    return agencies


def _ensure_categories(conn: Connection, count: int) -> list[tuple[str, str]]:
    """(slug, name) of `count` categories, created on first use."""
    existing = set(conn.scalars(select(Category.slug)))
    categories = []
    for i in range(count):
        name = CATEGORIES[i % len(CATEGORIES)]
        if i >= len(CATEGORIES):
            name = f"{name} {i // len(CATEGORIES) + 1}"
        slug = f"arch-cm-{i + 1:02d}"
        if slug not in existing:
            conn.execute(insert(Category).values(slug=slug, name=name))
        categories.append((slug, name))
    return categories


COLUMNS = (
    "id", "guid", "agency_id", "slug", "title", "summary", "body_format", "body_source",
    "body_html", "author", "category", "category_slug", "language", "published_at", "status",
    "revision", "rendered_revision", "cited_revision", "attempts", "last_error", "pending_since",
    "content_hash", "idempotency_key", "request_hash", "created_at", "updated_at", "rendered_at",
)  # fmt: skip
CITATION_COLUMNS = ("bulletin_id", "revision", "document_key", "position", "published_at")
PUBLISHED_AT = COLUMNS.index("published_at")
Rows = list[tuple[Any, ...]]


def _sqlite_datetime(moment: datetime) -> str:
    """What SQLAlchemy stores for a UTCDateTime on SQLite (checked in `_sqlite_writer`)."""
    return f"{moment:%Y-%m-%d %H:%M:%S}.{moment.microsecond:06d}"


def _sqlite_writer(conn: Connection) -> Callable[[Rows, Rows], None]:
    """executemany straight on the driver, for rows whose datetimes `_sqlite_datetime` made.

    SQLAlchemy's per-value bind processing (the UTCDateTime decorator, then the SQLite
    DATETIME formatter, for four datetimes a row) cost 1.5 s per 100k rows, a fifth of the
    whole load (measured). The stamps must be the very strings SQLAlchemy would store, or
    listings would sort wrongly: checked against SQLAlchemy's own processor first.
    """
    column = Bulletin.__table__.c.published_at
    processor = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    for sample in (datetime(2021, 3, 4, 5, 6, 7, 890, tzinfo=UTC), ARCHIVE_START):
        assert processor is not None and processor(sample) == _sqlite_datetime(sample)
    sql = (f"INSERT INTO bulletins ({', '.join(COLUMNS)}) "
           f"VALUES ({', '.join('?' * len(COLUMNS))})")  # fmt: skip
    cites = (f"INSERT INTO citations ({', '.join(CITATION_COLUMNS)}) "
             f"VALUES ({', '.join('?' * len(CITATION_COLUMNS))})")  # fmt: skip

    def write(rows: Rows, citations: Rows) -> None:
        conn.exec_driver_sql(sql, rows)
        conn.exec_driver_sql(cites, citations)

    return write


def _core_writer(conn: Connection) -> Callable[[Rows, Rows], None]:
    def write(rows: Rows, citations: Rows) -> None:
        conn.execute(insert(Bulletin), [dict(zip(COLUMNS, row, strict=True)) for row in rows])
        conn.execute(
            insert(Citation), [dict(zip(CITATION_COLUMNS, row, strict=True)) for row in citations]
        )

    return write


def _unchanged(moment: datetime) -> datetime:
    return moment


def populate(
    settings: Settings, n: int, agencies: int = 20, categories: int = 10, seed: int = 0
) -> None:
    """Add `n` published, rendered bulletins (see the module docstring)."""
    create_schema(settings)
    engine = engine_for(settings)
    rng = random.Random(seed)
    bodies = _body_pool(rng)
    documents = _document_pool(rng)
    with engine.begin() as conn:
        # Documents get their row when first cited, as the render step writes them (a
        # document row is a listing: an uncited pool document must not add one).
        written_keys = set(conn.scalars(select(LegalDocument.key)))
        agency_rows = _ensure_agencies(conn, agencies)
        category_rows = _ensure_categories(conn, categories)
        start = (conn.scalar(select(func.max(Bulletin.id))) or 0) + 1
    # One random prefix per call and a counter keep guids unique and valid UUID strings:
    # 0.3 µs a row instead of 3.4 µs for uuid4() (3 s of a 1M load; measured).
    guid_prefix = str(uuid.uuid4())[:24]
    with engine.connect() as conn:
        stamp: Callable[[datetime], Any]
        write: Callable[[Rows, Rows], None]
        if conn.dialect.name == "sqlite":
            write, stamp = _sqlite_writer(conn), _sqlite_datetime
        else:
            write, stamp = _core_writer(conn), _unchanged
        written = 0
        while written < n:
            for _ in range(CHUNKS_PER_TRANSACTION):
                count = min(CHUNK, n - written)
                if count <= 0:
                    break
                rows: Rows = []
                citations: Rows = []
                new: dict[str, PoolDocument] = {}
                for number in range(start + written, start + written + count):
                    cited = _cited(rng, number, documents)
                    rows.append(_row(rng, number, guid_prefix, bodies, agency_rows,
                                     category_rows, stamp, cited))  # fmt: skip
                    published = rows[-1][PUBLISHED_AT]
                    citations += [(number, 1, document.key, position, published)
                                  for position, document in enumerate(cited)]  # fmt: skip
                    new.update((d.key, d) for d in cited if d.key not in written_keys)
                _ensure_documents(conn, list(new.values()))
                written_keys.update(new)
                write(rows, citations)
                written += count
            conn.commit()
        if conn.dialect.name == "postgresql":
            # Ids are given explicitly (citations need them): move the id sequence past them.
            conn.exec_driver_sql(
                "SELECT setval(pg_get_serial_sequence('bulletins', 'id'), "
                "(SELECT max(id) FROM bulletins))"
            )
            # What autovacuum would soon do after a bulk load: fresh planner statistics, so
            # the benchmarks see the plans a live database gets (SQLite keeps none unless
            # ANALYZE is run, which Bantin never does: nothing to do there).
            conn.exec_driver_sql("ANALYZE bulletins")
            conn.exec_driver_sql("ANALYZE citations")
            conn.exec_driver_sql("ANALYZE documents")
            conn.commit()


def _cited(rng: random.Random, number: int, documents: list[PoolDocument]) -> list[PoolDocument]:
    """The documents bulletin `number` cites, in order of first mention."""
    count = rng.choices(range(len(CITES_WEIGHTS)), CITES_WEIGHTS)[0]
    cited = [documents[rng.randrange(DOCUMENTS)] for _ in range(count)]
    if number % POPULAR_EVERY == 0:
        cited.insert(0, POPULAR)
    return list(dict.fromkeys(cited))  # a document drawn twice is cited once


def _row(
    rng: random.Random,
    number: int,
    guid_prefix: str,
    bodies: list[tuple[str, str]],
    agency_rows: list[tuple[int, str]],
    category_rows: list[tuple[str, str]],
    stamp: Callable[[datetime], Any],
    cited: list[PoolDocument],
) -> tuple[Any, ...]:
    """One bulletin, as values in COLUMNS order; `stamp` gives the database's datetime. Its
    opening names the documents it cites, in full, in `cited` order."""
    title_index = number % len(TITLES)
    text, html = bodies[rng.randrange(POOL)]
    opening = f"Văn bản số {number} được ban hành theo thẩm quyền."
    if cited:
        opening = f"Căn cứ {', '.join(d.cited_as for d in cited)}. {opening}"
    offset = number * SECONDS_PER_BULLETIN - rng.randrange(BACKDATE_SECONDS)
    published = stamp(ARCHIVE_START + timedelta(seconds=offset))
    category_slug, category = category_rows[number % len(category_rows)]
    agency_id, _ = agency_rows[rng.randrange(len(agency_rows))]
    summary = None if number % 10 == 0 else f"{TITLES[title_index]}. {SENTENCES[number % 20]}"
    return (
        number,  # id
        f"urn:uuid:{guid_prefix}{number:012x}",  # guid
        agency_id,
        f"ban-tin-{title_index}-so-{number}",  # slug
        f"{TITLES[title_index]} (số {number})",  # title
        summary,
        BodyFormat.TEXT.value,
        f"{opening}\n\n{text}",  # body_source
        f"<p>{opening}</p>\n{html}",  # body_html
        AUTHORS[number % len(AUTHORS)] if number % 2 else None,
        category,
        category_slug,
        "vi",  # language
        published,  # published_at
        BulletinStatus.PUBLISHED.value,
        1,  # revision
        1,  # rendered_revision
        1,  # cited_revision: its citation rows are revision 1's
        1,  # attempts
        None,  # last_error
        None,  # pending_since
        None,  # content_hash
        None,  # idempotency_key
        None,  # request_hash
        published,  # created_at
        published,  # updated_at
        published,  # rendered_at
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", type=int)
    parser.add_argument("--data-dir", type=Path, default=Path("var") / "bench" / "archive")
    parser.add_argument("--agencies", type=int, default=20)
    parser.add_argument("--categories", type=int, default=10)
    args = parser.parse_args()
    settings = Settings(data_dir=args.data_dir)
    started = time.perf_counter()
    populate(settings, args.n, args.agencies, args.categories)
    elapsed = time.perf_counter() - started
    print(f"{args.n:,} bulletins in {elapsed:.1f} s ({args.n / elapsed:,.0f}/s)")


if __name__ == "__main__":
    main()
