"""Celery entry point: `celery -A services.cli.worker worker -Q render` (or `bantin worker`)."""

from shared.celery_app import create_celery_app
from shared.settings import get_settings

app = create_celery_app(
    get_settings(),
    include=["services.render.tasks", "services.render.batch", "services.feed.tasks"],
)
