"""The bulletin editor's form: what it holds, and how it becomes the API's BulletinCreate.

Validation is the API's own (services.ingest.schemas.BulletinCreate); only its messages are
put in Vietnamese here, field by field, for the people who write bulletins.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from services.ingest.schemas import BulletinCreate, idempotency_key
from shared.models import BodyFormat, Bulletin
from shared.settings import Settings

# Publish time choices: "now" (new bulletin, or a scheduled one brought forward), "keep"
# (a correction keeps the time the bulletin has), "at" (the datetime-local field).
NOW, KEEP, AT = "now", "keep", "at"

LABELS = {
    "title": "Tiêu đề",
    "summary": "Tóm tắt",
    "body": "Nội dung",
    "body_format": "Kiểu soạn thảo",
    "author": "Tác giả",
    "category": "Chuyên mục",
    "published_at": "Thời điểm đăng (giờ Việt Nam)",
}
# Field name → the id of its input in the editor (the error summary links to it).
FIELD_IDS = {
    "title": "tieu-de",
    "summary": "tom-tat",
    "body": "noi-dung-bai",
    "body_format": "noi-dung-bai",
    "author": "tac-gia",
    "category": "chuyen-muc",
    "published_at": "thoi-diem-dang",
}
FORMAT_CHOICES = {BodyFormat.TEXT.value: "Văn bản thường", BodyFormat.MARKDOWN.value: "Markdown"}
_AT_MOST = re.compile(r"at most (\d+) characters \(it has (\d+)\)")


@dataclass
class BulletinForm:
    """The editor's fields as typed (strings), kept through previews and errors."""

    title: str = ""
    summary: str = ""
    body: str = ""
    body_format: str = BodyFormat.TEXT.value
    author: str = ""
    category: str = ""
    when: str = NOW
    publish_at: str = ""  # datetime-local, Vietnam time
    idempotency_key: str = field(default_factory=lambda: str(uuid.uuid4()))
    revision: int | None = None  # the revision an edit was loaded at

    @classmethod
    def from_form(cls, data: Any) -> BulletinForm:
        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        key = text("idempotency_key").strip()
        try:
            valid_key = idempotency_key(key) if key else None
        except ValueError:
            valid_key = None
        revision_text = text("revision").strip()
        return cls(
            title=text("title"),
            summary=text("summary"),
            body=text("body"),
            body_format=text("body_format") or BodyFormat.TEXT.value,
            author=text("author"),
            category=text("category"),
            when=text("when") or NOW,
            publish_at=text("publish_at").strip(),
            idempotency_key=valid_key or str(uuid.uuid4()),
            # ASCII digits only: str.isdigit() takes "²", which int() refuses.
            revision=int(revision_text) if re.fullmatch(r"[0-9]{1,9}", revision_text) else None,
        )  # fmt: skip

    @classmethod
    def from_bulletin(cls, bulletin: Bulletin, settings: Settings) -> BulletinForm:
        scheduled = bulletin.status == "scheduled"
        return cls(
            title=bulletin.title,
            summary=bulletin.summary or "",
            body=bulletin.body_source,
            body_format=bulletin.body_format,
            author=bulletin.author or "",
            category=bulletin.category or "",
            when=AT if scheduled else KEEP,
            publish_at=local_input(bulletin.published_at, settings),
            revision=bulletin.revision,
        )

    def with_revision(self, revision: int) -> BulletinForm:
        return replace(self, revision=revision)


def local_input(moment: datetime, settings: Settings) -> str:
    """A moment as a datetime-local value in the site's zone (seconds kept)."""
    return moment.astimezone(settings.tz).replace(tzinfo=None).isoformat(timespec="seconds")


FieldErrors = dict[str, list[str]]


def _published_at(form: BulletinForm, settings: Settings, now: datetime) -> tuple[
    datetime | None, str | None
]:  # fmt: skip
    """The aware publish time the form asks for (None: now, or keep), or an error."""
    if form.when == NOW:
        # On a correction of a scheduled bulletin "now" must be said: None would keep its time.
        return (now if form.revision is not None else None), None
    if form.when == KEEP and form.revision is not None:
        return None, None
    if not form.publish_at:
        return None, "Chọn ngày giờ đăng, hoặc chọn “Đăng ngay”."
    try:
        local = datetime.fromisoformat(form.publish_at)
    except ValueError:
        return None, "Ngày giờ không hợp lệ: nhập theo dạng ngày/tháng/năm giờ:phút."
    if local.tzinfo is not None:
        return None, "Ngày giờ không hợp lệ: nhập theo giờ Việt Nam, không kèm múi giờ."
    if not 1001 <= local.year <= 9998:
        return None, "Năm phải từ 1001 đến 9998."
    return local.replace(tzinfo=settings.tz), None


def _message(name: str, error: dict[str, Any]) -> str:
    label = LABELS.get(name, name)
    text = str(error.get("msg", "")).removeprefix("Value error, ")
    if "must not be empty or blank" in text or error.get("type") == "missing":
        return f"Vui lòng nhập {label.lower()}."
    if match := _AT_MOST.search(text):
        return (f"{label} dài quá: tối đa {int(match[1]):,} ký tự (hiện có "
                f"{int(match[2]):,}).").replace(",", ".")  # fmt: skip
    if name == "body_format":
        return "Chọn “Văn bản thường” hoặc “Markdown”."
    if name == "published_at":
        return "Ngày giờ đăng phải từ năm 1001 đến năm 9998."
    return f"{label} không hợp lệ."


def vietnamese_errors(exc: ValidationError) -> FieldErrors:
    errors: FieldErrors = {}
    for error in exc.errors():
        loc = error.get("loc") or ("body",)
        name = str(loc[0])
        errors.setdefault(name, []).append(_message(name, dict(error)))
    return errors


def to_create(
    form: BulletinForm, settings: Settings, now: datetime, *, formats: tuple[str, ...]
) -> tuple[BulletinCreate | None, FieldErrors]:
    """The API's model of the form, or every error of it in Vietnamese."""
    errors: FieldErrors = {}
    published_at, problem = _published_at(form, settings, now)
    if problem:
        errors["published_at"] = [problem]
    if form.body_format not in formats:
        errors["body_format"] = ["Chọn “Văn bản thường” hoặc “Markdown”."]
    values: dict[str, Any] = {
        "title": form.title,
        "summary": form.summary or None,
        "body": form.body,
        "body_format": form.body_format if form.body_format in formats else "text",
        "author": form.author or None,
        "category": form.category or None,
        "published_at": published_at,
    }
    try:
        bulletin_in = BulletinCreate.model_validate(values)
    except ValidationError as exc:
        for name, messages in vietnamese_errors(exc).items():
            errors.setdefault(name, []).extend(messages)
        return None, errors
    return (None, errors) if errors else (bulletin_in, errors)
