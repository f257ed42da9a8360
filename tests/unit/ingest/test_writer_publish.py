"""The writer's lean render messages are the messages Celery itself sends: a worker cannot
tell them apart (tests/integration/test_pipeline.py has a real worker consume them)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kombu.transport import memory

from services.ingest.bulletins import _accepted_response, _answer
from services.ingest.writer import Accepted, RenderPublisher
from shared.celery_app import RENDER_BULLETIN, RENDER_QUEUE, create_celery_app
from tests.unit.ingest.helpers import make_settings


def _celery_message(tmp_path: Path) -> dict[str, Any]:
    """What `send_task` puts on the render queue (Kombu's in-memory transport keeps the same
    envelope its Redis transport JSON-encodes)."""
    celery = create_celery_app(make_settings(tmp_path))
    with celery.producer_or_acquire() as producer:
        channel = producer.channel
        channel._purge(RENDER_QUEUE)  # the in-memory queues are shared by the whole process
        celery.send_task(RENDER_BULLETIN, args=[41, 7], producer=producer)
        message = channel._get(RENDER_QUEUE)
    assert isinstance(channel, memory.Channel)
    return dict(message)


def test_the_message_is_the_one_celery_sends(tmp_path: Path) -> None:
    expected = _celery_message(tmp_path)
    celery = create_celery_app(make_settings(tmp_path))
    ours = json.loads(RenderPublisher(celery, None).message(41, 7))  # type: ignore[arg-type]

    assert ours.keys() == expected.keys()
    decode = base64.b64decode
    assert json.loads(decode(ours["body"])) == json.loads(decode(expected["body"]))
    ids = ("id", "root_id")
    assert {k: v for k, v in ours["headers"].items() if k not in ids} == {
        k: v for k, v in expected["headers"].items() if k not in ids
    }
    assert ours["headers"]["id"] == ours["headers"]["root_id"]
    unique = ("correlation_id", "delivery_tag", "reply_to")
    assert {k: v for k, v in ours["properties"].items() if k not in unique} == {
        k: v for k, v in expected["properties"].items() if k not in unique
    }
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["properties"]["reply_to"] == celery.thread_oid


def test_every_message_has_its_own_task_id(tmp_path: Path) -> None:
    publisher = RenderPublisher(create_celery_app(make_settings(tmp_path)), None)  # type: ignore[arg-type]
    first, second = (json.loads(publisher.message(1, 1)) for _ in range(2))
    assert first["headers"]["id"] != second["headers"]["id"]
    assert first["properties"]["delivery_tag"] != second["properties"]["delivery_tag"]


def test_the_preserialised_answer_is_what_fastapi_would_send(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, public_url="https://tin.ví-dụ.vn")
    for created in (True, False):
        accepted = Accepted(12, "queued", 3, "thong-bao-lich", created)
        response = _accepted_response(settings, "bac-kan", accepted)
        model = _answer(settings, "bac-kan", accepted)
        assert response.body == model.model_dump_json().encode()
        assert response.status_code == 202
        assert response.headers["content-type"] == "application/json"
        assert response.headers["location"] == model.status_url
        assert response.headers["etag"] == '"r3"'
        assert response.headers.get("idempotent-replayed") == (None if created else "true")


def test_the_lean_path_is_taken_only_for_the_configuration_it_copies(tmp_path: Path) -> None:
    """A key prefix or priorities make Kombu write elsewhere: the writer then uses Kombu."""
    settings = make_settings(tmp_path)
    assert RenderPublisher.fits(create_celery_app(settings))
    prefixed = create_celery_app(settings)
    prefixed.conf.broker_transport_options = {"global_keyprefix": "bantin:"}
    assert not RenderPublisher.fits(prefixed)
    prioritised = create_celery_app(settings)
    prioritised.conf.task_default_priority = 5
    assert not RenderPublisher.fits(prioritised)
