"""Agencies manage their own keys: list, mint, revoke; revoked keys stop working everywhere."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli import main as bantin
from services.ingest.app import create_app
from services.ingest.deps import KEY_CACHE_SECONDS, Caller, KeyCache
from shared.agencies import (
    DISPLAY_CHARS,
    KEY_PREFIX,
    MAX_ACTIVE_KEYS,
    hash_key,
    key_owner,
)
from shared.db import session_scope
from shared.models import ApiKey
from shared.settings import Settings, get_settings
from tests.unit.ingest.helpers import assert_problem, bearer, new_key

# The two tables as they were before keys had a display prefix and a revocation time.


def test_new_keys_carry_the_live_prefix_and_keep_a_display_prefix(settings: Settings) -> None:
    key = new_key(settings, "so-a")
    assert key.startswith("bt_live_") and len(key) > len(KEY_PREFIX) + 40
    with session_scope(settings) as session:
        row = session.query(ApiKey).one()
        assert row.prefix == key[:DISPLAY_CHARS] and row.key_hash == hash_key(key)
        assert row.revoked_at is None


def test_an_agency_lists_only_its_own_keys_and_sees_which_it_uses(
    client: TestClient, settings: Settings
) -> None:
    key, other = new_key(settings, "so-a"), new_key(settings, "so-b")
    minted = client.post("/v1/keys", headers=bearer(key))
    assert minted.status_code == 201 and minted.headers["cache-control"] == "no-store"
    listed = client.get("/v1/keys", headers=bearer(key)).json()["keys"]
    assert [k["current"] for k in listed] == [True, False]
    assert [k["prefix"] for k in listed] == [key[:DISPLAY_CHARS], minted.json()["prefix"]]
    assert all("key" not in k for k in listed)  # the secret is shown only at creation
    assert len(client.get("/v1/keys", headers=bearer(other)).json()["keys"]) == 1


def test_a_minted_key_works_at_once_and_is_shown_once(
    client: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "so-a")
    created = client.post("/v1/keys", headers=bearer(key)).json()
    assert created["key"].startswith(KEY_PREFIX) and created["prefix"] == created["key"][:16]
    assert created["current"] is False and created["revoked_at"] is None
    bulletin = {"title": "A", "body": "B"}
    accepted = client.post("/v1/bulletins", json=bulletin, headers=bearer(created["key"]))
    assert accepted.status_code == 202


def test_an_agency_cannot_revoke_another_agencys_key(
    client: TestClient, settings: Settings
) -> None:
    key, other = new_key(settings, "so-a"), new_key(settings, "so-b")
    other_id = client.get("/v1/keys", headers=bearer(other)).json()["keys"][0]["id"]
    assert_problem(client.delete(f"/v1/keys/{other_id}", headers=bearer(key)), 404)
    for absent in ("987654", "0", "-1", str(2**64)):  # beyond 64 bits: still a 404
        assert_problem(client.delete(f"/v1/keys/{absent}", headers=bearer(key)), 404)
    assert client.get("/v1/keys", headers=bearer(other)).status_code == 200


def test_revoking_the_calling_key_is_allowed_and_ends_it_at_once(
    client: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "so-a")
    spare = client.post("/v1/keys", headers=bearer(key)).json()
    mine = client.get("/v1/keys", headers=bearer(key)).json()["keys"][0]
    revoked = client.delete(f"/v1/keys/{mine['id']}", headers=bearer(key))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert_problem(client.get("/v1/keys", headers=bearer(key)), 401)  # same process: at once
    listed = client.get("/v1/keys", headers=bearer(spare["key"])).json()["keys"]
    assert listed[0]["revoked_at"] == revoked.json()["revoked_at"]
    # Revoking again changes nothing, not even the time.
    again = client.delete(f"/v1/keys/{mine['id']}", headers=bearer(spare["key"]))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


def test_a_key_revoked_elsewhere_stops_working_here_within_the_cache_time(
    client: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "so-a")
    spare = client.post("/v1/keys", headers=bearer(key)).json()
    with TestClient(create_app(settings), raise_server_exceptions=False) as elsewhere:
        assert client.get("/v1/keys", headers=bearer(spare["key"])).status_code == 200  # cached
        assert elsewhere.delete(f"/v1/keys/{spare['id']}", headers=bearer(key)).status_code == 200
    time.sleep(KEY_CACHE_SECONDS + 0.1)  # the cached entry has expired by now, whatever the load
    assert_problem(client.get("/v1/keys", headers=bearer(spare["key"])), 401)
    assert KEY_CACHE_SECONDS < 1  # the promise: within a second on every process


def test_a_legacy_key_keeps_working_and_lists_without_prefix(
    client: TestClient, settings: Settings
) -> None:
    key = new_key(settings, "so-a")
    legacy = "bt_" + "x" * 43
    with session_scope(settings) as session:
        agency_id = session.query(ApiKey).one().agency_id
        session.add(ApiKey(agency_id=agency_id, key_hash=hash_key(legacy)))
    assert client.get("/v1/keys", headers=bearer(legacy)).status_code == 200
    prefixes = [k["prefix"] for k in client.get("/v1/keys", headers=bearer(key)).json()["keys"]]
    assert prefixes == [key[:DISPLAY_CHARS], None]


def test_an_agency_has_at_most_a_few_active_keys(client: TestClient, settings: Settings) -> None:
    key = new_key(settings, "so-a")
    statuses = [
        client.post("/v1/keys", headers=bearer(key)).status_code for _ in range(MAX_ACTIVE_KEYS)
    ]
    assert statuses == [201] * (MAX_ACTIVE_KEYS - 1) + [409]
    listed = client.get("/v1/keys", headers=bearer(key)).json()["keys"]
    assert len(listed) == MAX_ACTIVE_KEYS  # the refused one was rolled back
    client.delete(f"/v1/keys/{listed[-1]['id']}", headers=bearer(key))
    assert client.post("/v1/keys", headers=bearer(key)).status_code == 201


def test_key_management_is_documented_under_its_own_tag(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/v1/keys"]["get"]["tags"] == ["keys"]
    assert {"201", "401", "409"} <= set(paths["/v1/keys"]["post"]["responses"])
    assert {"200", "401", "404"} <= set(paths["/v1/keys/{key_id}"]["delete"]["responses"])


def test_concurrent_requests_with_one_key_share_one_lookup() -> None:
    lookups = 0

    async def lookup() -> Caller | None:
        nonlocal lookups
        lookups += 1
        await asyncio.sleep(0.01)
        return Caller(1, "so-a", "Sở A", 1)

    async def many() -> list[Caller | None]:
        cache = KeyCache()
        first = await asyncio.gather(*(cache.resolve("digest", lookup) for _ in range(20)))
        return [*first, await cache.resolve("digest", lookup)]  # then from the cache

    callers = asyncio.run(many())
    assert lookups == 1 and all(c == Caller(1, "so-a", "Sở A", 1) for c in callers)


def test_a_failed_lookup_reaches_every_waiter_and_is_not_cached() -> None:
    async def failing() -> Caller | None:
        await asyncio.sleep(0.01)
        raise OSError("database down")

    async def run() -> tuple[list[Any], KeyCache]:
        cache = KeyCache()
        results = await asyncio.gather(
            *(cache.resolve("digest", failing) for _ in range(3)), return_exceptions=True
        )
        return results, cache

    results, cache = asyncio.run(run())
    assert all(isinstance(r, OSError) for r in results) and cache.get("digest") is None


def test_the_cli_mints_and_revokes_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    monkeypatch.setenv("BANTIN_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BANTIN_REDIS_URL", "memory://")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        made = runner.invoke(bantin, ["agency", "create", "Sở Nội vụ", "--slug", "so-noi-vu"])
        assert made.exit_code == 0 and made.output.splitlines()[-1].startswith(KEY_PREFIX)
        minted = runner.invoke(bantin, ["key", "create", "--agency", "so-noi-vu"])
        assert minted.exit_code == 0, minted.output
        new = minted.output.splitlines()[-1]
        assert new.startswith(KEY_PREFIX)
        missing = runner.invoke(bantin, ["key", "create", "--agency", "khong-co"])
        assert missing.exit_code != 0 and "no agency" in missing.output
        assert runner.invoke(bantin, ["key", "revoke", "bt_live_"]).exit_code != 0  # ambiguous
        revoked = runner.invoke(bantin, ["key", "revoke", new[:DISPLAY_CHARS]])
        assert revoked.exit_code == 0, revoked.output
        with session_scope(settings) as session:
            assert key_owner(session, new) is None
            assert key_owner(session, made.output.splitlines()[-1]) is not None
    finally:
        get_settings.cache_clear()
