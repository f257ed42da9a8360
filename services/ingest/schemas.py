"""Request and response models of the ingest API: the contract agencies code against."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
)

from services.ingest.problems import ProblemDocument
from shared.models import BodyFormat
from shared.sanitize import clean_text


def _clean(value: str) -> str:
    return clean_text(value).strip()


def _clean_optional(value: str | None) -> str | None:
    if value is None:
        return None
    return _clean(value) or None


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be empty or blank")
    return value


def _at_most(limit: int) -> Any:
    """A length check on the cleaned text: NFC can lengthen a string, and the database
    column holds the cleaned one."""

    def check(value: str | None) -> str | None:
        if value is not None and len(value) > limit:
            raise ValueError(f"must be at most {limit} characters (it has {len(value)})")
        return value

    return AfterValidator(check)


# "Holds a character that is kept and is not white space": what `_not_blank` asks of the
# cleaned text, as a JSON Schema pattern (unanchored: it only has to occur somewhere). The
# class is what `str.strip` removes plus what `clean_text` drops (shared/sanitize.py), except
# lone surrogates: the regex engines of JSON Schema validators cannot name them (clean_text
# still drops them, and a text of nothing else gets its 422). The noncharacters beyond the
# first plane are written as themselves: regex dialects disagree on escapes above U+FFFF.
NOT_BLANK_PATTERN = (
    r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    r"\ufdd0-\ufdef\ufffe\uffff"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(1, 17))
    + "]"
)


def _text(max_length: int) -> Any:
    """A required string: cleaned, not blank, at most `max_length` characters once cleaned."""
    return Annotated[
        str,
        Field(json_schema_extra={"maxLength": max_length, "pattern": NOT_BLANK_PATTERN}),
        AfterValidator(_clean),
        AfterValidator(_not_blank),
        _at_most(max_length),
    ]


def _optional_text(max_length: int) -> Any:
    """An optional string: the length limit applies to the text, and null or blank is None.

    (A limit on the whole `str | None` would be applied to null too, and crash.)
    """
    return (
        Annotated[
            str,
            Field(json_schema_extra={"maxLength": max_length}),
            AfterValidator(_clean_optional),
            _at_most(max_length),
        ]
        | None
    )


# RFC 3339 date-time with its offset, as OpenAPI's `date-time` means. Pydantic alone would
# also take Unix times (numbers, or digit strings) and dates without seconds. The year is
# 1001 to 9998 as written, so that any offset keeps it storable (see `_storable_date`); the
# same pattern is in the OpenAPI document, so what it calls valid is what is accepted.
_YEAR = "(100[1-9]|10[1-9][0-9]|1[1-9][0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_RFC3339 = re.compile(
    _YEAR + "-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
)
# Dates the whole pipeline can carry: stored as UTC, then shown in the site's zone (up to
# a day away) and formatted with four-digit years in pages and feeds.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, tzinfo=UTC)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            "must be an RFC 3339 date-time with an offset and a year from 1001 to 9998, "
            "e.g. 2020-07-31T08:00:00+07:00"
        )
    return value


def _storable_date(value: datetime) -> datetime:
    try:
        in_utc = value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is in year 0 in UTC
        in_utc = None
    if in_utc is None or not EARLIEST <= in_utc <= LATEST:
        raise ValueError(
            f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} once converted to UTC"
        )
    return value


PublishedAt = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_storable_date),
    Field(json_schema_extra={"pattern": f"^{_RFC3339.pattern}$"}),
]

LANGUAGE_MAX = 16  # the column's width

# An Idempotency-Key: visible ASCII (spaces inside allowed), 1 to 200 characters. Empty or
# blank keys are refused rather than stored, where one would collide with every later one.
IDEMPOTENCY_KEY_MAX = 200
_IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > IDEMPOTENCY_KEY_MAX or not _IDEMPOTENCY_KEY.fullmatch(value):
        raise ValueError(
            f"must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters, without leading or "
            "trailing spaces"
        )
    return value


IdempotencyKey = Annotated[
    str,
    # Anchored: a JSON Schema pattern only has to match somewhere in the value.
    Field(json_schema_extra={"minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX,
                             "pattern": f"^{_IDEMPOTENCY_KEY.pattern}$"}),
    AfterValidator(idempotency_key),
]  # fmt: skip


SEED_EXAMPLE: dict[str, JsonValue] = {
    "title": "Ban hành Kế hoạch hành động thực hiện Quyết định số 628/QĐ-TTg",
    "summary": "Ngày 30/7/2020, UBND tỉnh ban hành Kế hoạch hành động ...",
    "body": "Theo đó, Kế hoạch đề ra 6 nhiệm vụ, giải pháp chủ yếu ...\n\nTại Kế hoạch, ...",
    "body_format": "text",
    "author": "Hồng Nhung",
    "category": "Giáo dục",
    "published_at": "2020-07-31T08:00:00+07:00",
    "language": "vi",
}


class BulletinCreate(BaseModel):
    """A bulletin as an agency submits it. Unknown fields are refused, so typos surface."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [SEED_EXAMPLE]})

    title: _text(500)  # type: ignore[valid-type]
    body: _text(500_000)  # type: ignore[valid-type]
    body_format: BodyFormat = Field(
        BodyFormat.TEXT,
        description="`text`: paragraphs separated by blank lines; `markdown`: CommonMark "
        "without raw HTML; `html`: sanitised to a safe allowlist.",
    )
    summary: _optional_text(5_000) = Field(None, description="The lead.")  # type: ignore[valid-type]
    author: _optional_text(200) = None  # type: ignore[valid-type]
    category: _optional_text(200) = None  # type: ignore[valid-type]
    published_at: PublishedAt | None = Field(
        None,
        description="RFC 3339 with an offset and a year from 1001 to 9998, e.g. "
        "2020-07-31T08:00:00+07:00. Default: now (on a correction: unchanged). In the future: "
        "embargoed until then.",
    )
    language: str = Field(
        "vi", max_length=LANGUAGE_MAX, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
    )


WITHDRAWAL_NOTICE_MAX = 1000


class Withdrawal(BaseModel):
    """The optional body of a withdrawal."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"notice": "Bản tin đăng nhầm số liệu; sẽ đăng lại."}]},
    )

    notice: _optional_text(WITHDRAWAL_NOTICE_MAX) = Field(  # type: ignore[valid-type]
        None,
        description="A public notice, plain text, shown on the withdrawn bulletin's page "
        "(`410`) under the agency's name. Blank or null: none.",
    )


class BulletinAccepted(BaseModel):
    id: int
    status: str
    revision: int
    url: str = Field(description="The public page address the bulletin has once published.")
    status_url: str


class CitationPublic(BaseModel):
    """A legal document the bulletin's live page cites and links to."""

    key: str = Field(description="The document's key, e.g. `qd-ttg-628-2020`.")
    name: str = Field(description="As cited, without the date: `Quyết định số 628/QĐ-TTg`.")
    title: str = Field(description="The name with its date when known.")
    type: str = Field(description="The document type as written in full: `Quyết định`.")
    number: str = Field(description="`628`")
    year: int | None
    issuer: str = Field(description="The issuer code: `QĐ-TTg`.")
    issued_on: date | None = Field(description="The date the text states, if any.")
    url: str = Field(description="The document's public page: every bulletin citing it.")


class BulletinPublic(BaseModel):
    id: int
    guid: str
    status: str = Field(description="queued, scheduled, published, withdrawn or failed")
    revision: int
    rendered_revision: int = Field(description="The revision the live page shows (0: none).")
    attempts: int = Field(description="Render attempts of the current revision.")
    url: str
    title: str
    summary: str | None
    body: str
    body_format: BodyFormat
    body_html: str
    author: str | None
    category: str | None
    language: str
    published_at: datetime
    created_at: datetime
    updated_at: datetime
    rendered_at: datetime | None
    last_error: str | None
    withdrawal_notice: str | None = Field(
        None, description="The public notice given with the withdrawal, if any."
    )
    citations: list[CitationPublic] = Field(
        default_factory=list,
        description="The legal documents the live page cites (revision `rendered_revision`), "
        "in order of first mention; empty before the first render and once withdrawn.",
    )


MAX_BATCH_ITEMS = 100


class BatchItem(BulletinCreate):
    idempotency_key: IdempotencyKey | None = Field(None, description="Per item.")


class BatchSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items stay raw here and are validated one by one, so one bad item cannot sink the rest.
    # Any, not JsonValue: the body is JSON already, and walking it here would fail the whole
    # batch on one item nested deeper than pydantic's recursion limit.
    bulletins: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS, description="Up to 100 bulletins."
    )


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="202, or the error status this item would have had alone.")
    replayed: bool = False
    bulletin: BulletinAccepted | None = None
    problem: ProblemDocument | None = Field(None, description="Why this item was not stored.")


class BatchResult(BaseModel):
    accepted: int
    results: list[BatchItemResult]
