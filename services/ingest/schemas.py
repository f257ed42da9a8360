"""Request and response models of the ingest API: the contract agencies code against."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

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


CleanText = Annotated[str, AfterValidator(_clean), AfterValidator(_not_blank)]


def _optional_text(max_length: int) -> Any:
    """An optional string: the length limit applies to the text, and null or blank is None.

    (A limit on the whole `str | None` would be applied to null too, and crash.)
    """
    return Annotated[str, Field(max_length=max_length), AfterValidator(_clean_optional)] | None


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

    title: Annotated[CleanText, Field(max_length=500)]
    body: Annotated[CleanText, Field(max_length=500_000)]
    body_format: BodyFormat = Field(
        BodyFormat.TEXT,
        description="`text`: paragraphs separated by blank lines; `markdown`: CommonMark "
        "without raw HTML; `html`: sanitised to a safe allowlist.",
    )
    summary: _optional_text(5_000) = Field(None, description="The lead.")  # type: ignore[valid-type]
    author: _optional_text(200) = None  # type: ignore[valid-type]
    category: _optional_text(200) = None  # type: ignore[valid-type]
    published_at: AwareDatetime | None = Field(
        None,
        description="RFC 3339 with an offset, e.g. 2020-07-31T08:00:00+07:00. Default: now "
        "(on a correction: unchanged). In the future: embargoed until then.",
    )
    language: str = Field("vi", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class BulletinAccepted(BaseModel):
    id: int
    status: str
    revision: int
    url: str = Field(description="The public page address the bulletin has once published.")
    status_url: str


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


MAX_BATCH_ITEMS = 100


class BatchItem(BulletinCreate):
    idempotency_key: str | None = Field(None, max_length=200, description="Per item.")


class BatchSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items stay raw here and are validated one by one, so one bad item cannot sink the rest.
    bulletins: list[dict[str, JsonValue]] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS, description="Up to 100 bulletins."
    )


class BatchItemResult(BaseModel):
    index: int
    status: int = Field(description="202, or the error status this item would have had alone.")
    replayed: bool = False
    bulletin: BulletinAccepted | None = None
    problem: dict[str, JsonValue] | None = None


class BatchResult(BaseModel):
    accepted: int
    results: list[BatchItemResult]
