"""The public notice of a withdrawal (DELETE /v1/bulletins/{id} with {"notice": ...}), and
the folded title every revision stores for the console's search."""

from __future__ import annotations

import unicodedata

import httpx
import pytest
from fastapi.testclient import TestClient

from services.ingest import service
from services.ingest.problems import Problem
from shared.db import session_scope
from shared.models import Bulletin
from shared.settings import Settings
from tests.unit.ingest.helpers import assert_problem


def post(client: TestClient, auth: dict[str, str], title: str) -> str:
    answer = client.post("/v1/bulletins", json={"title": title, "body": "Nội dung."}, headers=auth)
    assert answer.status_code == 202, answer.text
    return f"/v1/bulletins/{answer.json()['id']}"


def stored(settings: Settings, path: str) -> Bulletin:
    with session_scope(settings) as session:
        bulletin = session.get(Bulletin, int(path.rsplit("/", 1)[1]))
        assert bulletin is not None
        return bulletin


def withdraw(
    client: TestClient, path: str, auth: dict[str, str], *, content_type: str | None = None,
    **kwargs: object,
) -> httpx.Response:  # fmt: skip
    headers = auth if content_type is None else {**auth, "Content-Type": content_type}
    return client.request("DELETE", path, headers=headers, **kwargs)  # type: ignore[arg-type]


def test_a_notice_is_stored_with_the_withdrawal_nfc_and_stripped(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    path = post(client, auth, "Kế hoạch số 5")
    typed = unicodedata.normalize("NFD", "  Bản tin đăng nhầm số liệu.\r\n\r\nSẽ đăng lại.  ")
    answer = withdraw(client, path, auth, json={"notice": typed})
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "withdrawn"
    notice = "Bản tin đăng nhầm số liệu.\n\nSẽ đăng lại."
    assert stored(settings, path).withdrawal_notice == notice
    assert client.get(path, headers=auth).json()["withdrawal_notice"] == notice
    # Withdrawing again changes nothing, the notice included.
    again = withdraw(client, path, auth, json={"notice": "Khác"})
    assert again.status_code == 202 and again.json()["revision"] == answer.json()["revision"]
    assert stored(settings, path).withdrawal_notice == notice


@pytest.mark.parametrize(
    "body", [None, b"", b"null", b"{}", b'{"notice": null}', b'{"notice": " \\n "}']
)
def test_no_body_or_a_blank_notice_withdraws_without_one(
    client: TestClient, settings: Settings, auth: dict[str, str], body: bytes | None
) -> None:
    path = post(client, auth, "Tin")
    if body is None:
        answer = withdraw(client, path, auth)
    else:
        answer = withdraw(client, path, auth, content=body, content_type="application/json")
    assert answer.status_code == 202, answer.text
    assert stored(settings, path).withdrawal_notice is None
    assert stored(settings, path).status == "withdrawn"


def test_a_bad_notice_body_is_refused_and_changes_nothing(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    path = post(client, auth, "Tin")
    too_long = assert_problem(withdraw(client, path, auth, json={"notice": "a" * 1001}), 422)
    assert too_long["errors"][0]["field"] == "notice"
    assert_problem(withdraw(client, path, auth, json={"notice": "x", "other": 1}), 422)
    assert_problem(withdraw(client, path, auth, json={"notice": 5}), 422)
    form = withdraw(client, path, auth, content=b"notice=x",
                    content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert_problem(form, 415)
    broken = withdraw(client, path, auth, content=b"{", content_type="application/json")
    assert_problem(broken, 400)
    assert stored(settings, path).status != "withdrawn"
    ok = withdraw(client, path, auth, json={"notice": "a" * 1000})
    assert ok.status_code == 202 and stored(settings, path).withdrawal_notice == "a" * 1000


def test_the_service_cleans_and_bounds_the_notice() -> None:
    assert service.withdrawal_notice(None) is None
    assert service.withdrawal_notice("  \n\t ") is None
    assert service.withdrawal_notice(unicodedata.normalize("NFD", " Đã gỡ\x00 ")) == "Đã gỡ"
    with pytest.raises(Problem) as refused:
        service.withdrawal_notice("a" * 1001)
    assert refused.value.status == 422


def test_every_revision_stores_its_folded_title(
    client: TestClient, settings: Settings, auth: dict[str, str]
) -> None:
    path = post(client, auth, "Ban hành Kế hoạch  số 5")
    assert stored(settings, path).title_folded == "ban hanh ke hoach so 5"
    corrected = client.put(path, json={"title": "Đính chính: Kế hoạch", "body": "B"}, headers=auth)
    assert corrected.status_code == 202, corrected.text
    assert stored(settings, path).title_folded == "dinh chinh: ke hoach"
