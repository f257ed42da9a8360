"""`bantin publish`: a small httpx client for agencies and operators.

It accepts a JSON file (sent as-is) or a plain-text file shaped like the agencies' existing
pages: an optional date line (dd/mm/yyyy), the title, the lead, paragraphs, and the author's
name as a short last line. Scraping leftovers such as "PublishingPortal - ..." lines and the
"Tăng cỡ chữ Giảm cỡ chữ" toolbar text are dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

_JUNK = re.compile(r"^(PublishingPortal\b.*|Tăng cỡ chữ\s*Giảm cỡ chữ)$", re.IGNORECASE)
_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_AUTHOR_MAX_WORDS = 5


class PublishError(RuntimeError):
    pass


def parse_text_bulletin(text: str, tz: ZoneInfo) -> dict[str, Any]:
    text = unicodedata.normalize("NFC", text)
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not _JUNK.match(line)]
    bulletin: dict[str, Any] = {"body_format": "text"}
    if lines and (date := _DATE.match(lines[0])):
        day, month, year = (int(part) for part in date.groups())
        bulletin["published_at"] = datetime(year, month, day, tzinfo=tz).isoformat()
        lines = lines[1:]
    if not lines:
        raise PublishError("the file holds no title")
    bulletin["title"], *paragraphs = lines
    last = paragraphs[-1] if paragraphs else ""
    if len(paragraphs) >= 3 and len(last.split()) <= _AUTHOR_MAX_WORDS and last[-1:] not in ".:;!?":
        bulletin["author"] = paragraphs.pop()
    if len(paragraphs) >= 2:
        bulletin["summary"] = paragraphs.pop(0)
    if not paragraphs:
        raise PublishError("the file holds no body after the title")
    bulletin["body"] = "\n\n".join(paragraphs)
    return bulletin


def load_bulletin(path: Path, tz: ZoneInfo) -> dict[str, Any]:
    raw = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        loaded: dict[str, Any] = json.loads(raw)
        return loaded
    return parse_text_bulletin(raw, tz)


def publish(
    bulletin: dict[str, Any],
    *,
    api_url: str,
    key: str,
    wait_seconds: float = 30.0,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Submit and wait until published; returns the final status document.

    The Idempotency-Key is the digest of the bulletin, so running the same publish twice
    (say, after a timeout) never creates a second bulletin.
    """
    body = json.dumps(bulletin, ensure_ascii=False, sort_keys=True).encode()
    headers = {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Idempotency-Key": "publish-" + hashlib.sha256(body).hexdigest()[:32],
    }
    with httpx.Client(base_url=api_url, timeout=10, transport=transport) as client:
        answer = client.post("/v1/bulletins", content=body, headers=headers)
        if answer.status_code != 202:
            raise PublishError(_problem_text(answer))
        accepted = answer.json()
        deadline = time.monotonic() + wait_seconds
        delay = 0.05
        while True:
            status = client.get(accepted["status_url"], headers=headers)
            if status.status_code != 200:
                raise PublishError(_problem_text(status))
            document: dict[str, Any] = status.json()
            if document["status"] == "published":
                return document
            if document["status"] == "failed":
                raise PublishError(f"publishing failed: {document.get('last_error')}")
            if time.monotonic() > deadline:
                raise PublishError(
                    f"still {document['status']} after {wait_seconds:.0f} s: {accepted['url']}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _problem_text(response: httpx.Response) -> str:
    try:
        problem = response.json()
        return f"{response.status_code} {problem.get('title')}: {problem.get('detail')}"
    except ValueError:
        return f"{response.status_code}: {response.text[:200]}"
