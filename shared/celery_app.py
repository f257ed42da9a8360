"""The one Celery app. Redis carries only (id, revision) messages; the database is the truth."""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

from shared.settings import Settings

RENDER_QUEUE = "render"
FEED_QUEUE = "feed"
DELIVER_QUEUE = "deliver"  # WebSub: intent verification and content distribution

# Stable task names: queued messages name tasks by these strings, so they must survive renames.
RENDER_BULLETIN = "render.bulletin"
RENDER_LISTING = "render.listing"
RENDER_BATCH = "render.batch"  # `bantin rebuild`: many pages per task
BUILD_FEEDS = "feed.listing"
VERIFY_INTENT = "deliver.verify"
DELIVER_CONTENT = "deliver.content"
DELIVER_FANOUT = "deliver.fanout"  # one per feed build; it queues one delivery per subscriber

QUEUES = (RENDER_QUEUE, FEED_QUEUE, DELIVER_QUEUE)
TASK_TIME_LIMIT = 60


def create_celery_app(settings: Settings, *, include: list[str] | None = None) -> Celery:
    app = Celery("bantin", include=include or [])
    app.conf.update(
        broker_url=settings.broker_url,
        # Bulletin status lives in the database; a result backend would only cost a write.
        task_ignore_result=True,
        result_backend=None,
        # Ack after the task ran, and give the message back if the worker process dies, so a
        # killed worker's task runs again (tasks are idempotent, so a repeat is harmless).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # One message at a time per process: a dying worker holds at most one, and a slow
        # render does not hold up messages another process could take.
        worker_prefetch_multiplier=1,
        # Messages go straight to the list named after the queue (the nameless exchange), not
        # through exchange bindings: bindings live in Redis and vanish when it restarts empty,
        # while Kombu remembers in-process that it declared them and never writes them again,
        # so every later message would be dropped as undeliverable.
        task_queues=[Queue(q, Exchange(""), routing_key=q) for q in QUEUES],
        task_default_queue=RENDER_QUEUE,
        task_default_exchange="",
        task_routes={
            "render.*": {"queue": RENDER_QUEUE, "exchange": "", "routing_key": RENDER_QUEUE},
            "feed.*": {"queue": FEED_QUEUE, "exchange": "", "routing_key": FEED_QUEUE},
            "deliver.*": {"queue": DELIVER_QUEUE, "exchange": "", "routing_key": DELIVER_QUEUE},
        },
        task_serializer="json",
        accept_content=["json"],
        # Renders take milliseconds; a minute means something is stuck. Both limits stay well
        # under the visibility timeout, or a slow task would be handed to a second worker.
        task_time_limit=TASK_TIME_LIMIT,
        task_soft_time_limit=TASK_TIME_LIMIT - 10,
        # An unacked message of a dead worker comes back after this (default: one hour). The
        # database reconciler re-sends lost work sooner; this is the broker's own backstop.
        broker_transport_options={
            "visibility_timeout": 300,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
        },
        # Publishing must not hang a request when Redis is down: a couple of quick retries,
        # then the caller gets the error and the reconciler re-sends from the database.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # Workers keep trying to reach Redis for ever (an operator restarts Redis, the worker
        # carries on) and stop running tasks whose ack could no longer be delivered.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
        timezone="UTC",
    )
    return app
