"""The one settings object: every value comes from a ``BANTIN_*`` env var or its default."""

from __future__ import annotations

import ipaddress
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import limits
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_OPERATOR_TOKEN = 32


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BANTIN_", extra="ignore")

    data_dir: Path = Field(
        Path("./var"),
        description="Holds the SQLite file, the rendered site and the embedded Redis.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Unset: SQLite file `bantin.db` in the data dir."
    )
    redis_url: str | None = Field(
        None,
        description="redis:// URL of the broker. Unset: `bantin up` starts an embedded Redis "
        "in the data dir and hands its URL to every child process.",
    )
    public_url: str = Field(
        "",
        description="Base URL used in pages, feeds and API answers. Unset: the gateway's own "
        "address, `http://{gateway_host}:{gateway_port}` (127.0.0.1 for a wildcard host).",
    )
    gateway_host: str = Field("127.0.0.1", description="Interface the gateway listens on.")
    gateway_port: int = Field(8000, description="Port of the public read side.")
    ingest_host: str = Field("127.0.0.1", description="Interface the ingest API listens on.")
    ingest_port: int = Field(8001, description="Port of the write API.")
    ingest_public_url: str | None = Field(
        None,
        description="Base URL of the write API as clients reach it, used in `status_url` and "
        "`Location`. Unset: `http://{ingest_host}:{ingest_port}` (127.0.0.1 for a wildcard "
        "host). Never taken from the request's Host header.",
    )
    timezone: str = Field("Asia/Ho_Chi_Minh", description="Zone for displayed dates and feeds.")
    site_title: str = Field("Bản tin", description="Site name in headers and feed titles.")
    site_dir: Path | None = Field(
        None, description="Where rendered pages and feeds go. Unset: `site/` in the data dir."
    )
    storage_url: str = Field(
        "",
        description="Where rendered pages, feeds, tombstones and static assets are stored. "
        "Unset: the site directory (`BANTIN_SITE_DIR`). `s3://BUCKET/PREFIX?endpoint=URL"
        "&region=NAME` puts them in an S3-compatible bucket instead (endpoint and region are "
        "optional; credentials come from the standard `AWS_*` environment variables).",
    )
    listing_rebuild_seconds: float = Field(
        0.1,
        gt=0,
        le=60,
        description="Render workers: the least time between two builds of a busy listing's "
        "index page (the home page, an agency's, a category's) while bulletins keep coming. "
        "Raise it on a national deployment (docs/capacity.md): a busy listing then costs "
        "proportionally less CPU, and its page shows new bulletins that much later.",
    )
    feed_rebuild_seconds: float = Field(
        0.25,
        gt=0,
        le=300,
        description="Feed workers: the same for a busy listing's feeds (RSS, Atom, JSON) and "
        "their WebSub pushes.",
    )
    max_request_bytes: int = Field(
        1_048_576, description="Largest request body the ingest API reads (413 above it)."
    )
    rate_limit: str = Field(
        "50/second",
        description="Per agency, shared by every ingest process (held in Redis): submissions, "
        "corrections, withdrawals and key changes. Over it: `429` with `Retry-After`. Syntax "
        "of the `limits` package: `50/second`, `600 per minute`.",
    )
    batch_rate_limit: str = Field(
        "200/second",
        description="Per agency, for `POST /v1/bulletins:batch`, counted per bulletin (a batch "
        "of 40 uses 40), separate from `BANTIN_RATE_LIMIT`.",
    )
    sign_in_rate_limit: str = Field(
        "5 per 15 minutes",
        description="Web console: sign-in attempts allowed per (e-mail address, client "
        "address) pair, and ten times that per e-mail address and per client address, shared "
        "through Redis; a successful sign-in clears the pair's and the e-mail's count. Past a "
        "budget the sign-in form refuses every attempt, right or wrong, until the window frees.",
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated addresses or networks (CIDR) of the reverse proxies in "
        "front of ingest whose `X-Forwarded-For` is believed, for the sign-in limit per client "
        "address. Empty: the connecting address is the client's.",
    )
    console_session_hours: float = Field(
        12,
        description="Web console: a session ends after this many hours without a request "
        "(and after seven times as long whatever happens).",
    )
    console_invite_hours: float = Field(
        72, description="Web console: how long the sign-in link of `bantin user invite` works."
    )
    max_header_bytes: int = Field(
        32_768,
        description="Largest request head (request line and headers) the HTTP servers read; "
        "`431` above it.",
    )
    header_timeout_seconds: float = Field(
        10.0,
        description="A request head must arrive within this long (from the connection's start "
        "or the request's first byte), or the HTTP servers close the connection.",
    )
    body_timeout_seconds: float = Field(
        30.0,
        description="A request body must arrive within this long after its head, or the HTTP "
        "servers close the connection.",
    )
    feed_items: int = Field(50, description="Items per feed (the newest ones).")
    index_items: int = Field(30, description="Bulletins listed on the home and index pages.")
    archive_items: int = Field(
        500,
        ge=1,
        description="Most entries in one RFC 5005 archive document (a listing's month); a "
        "bigger month is split into parts.",
    )
    requeue_after_seconds: float = Field(
        30.0,
        description="The reconciler re-sends a render still owed after this long (covers a "
        "Redis restart, a message lost with a killed worker).",
    )
    reconcile_interval_seconds: float = Field(
        2.0,
        description="How often the reconciler runs: embargoed bulletins go live at most this "
        "long after their time.",
    )
    verify_interval_seconds: float = Field(
        10.0,
        description="How often the reconciler checks every page listing and feed against the "
        "database and rebuilds the stale ones (after a Redis restart, a lost trigger).",
    )
    max_attempts: int = Field(
        5, description="Render attempts per revision before a bulletin is marked `failed`."
    )
    hub_allow_private_callbacks: bool = Field(
        False,
        description="Let the WebSub hub (`POST /hub` on ingest) call back to loopback, private "
        "and link-local addresses. Off, such callbacks are refused, so the hub cannot be used "
        "to probe the operator's network; tests and single-machine setups turn it on.",
    )
    hub_max_per_topic: int = Field(
        10_000, ge=1, description="Most live WebSub subscriptions one feed (topic) may have."
    )
    hub_max_per_host: int = Field(
        100,
        ge=1,
        description="Most live WebSub subscriptions whose callbacks share one host name, so one "
        "subscriber cannot fill the hub.",
    )
    hub_purge_days: int = Field(
        30,
        ge=1,
        description="Unsubscribed, denied and expired WebSub subscriptions are deleted this many "
        "days after they ended.",
    )
    fault_injection: bool = Field(
        False,
        description="Tests only: honour fault files in `<data dir>/faults/` (crash or delay "
        "at named points). Never set in production.",
    )
    log_level: str = Field("INFO", description="Log level of every process.")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`: one readable line per event; `json`: one JSON object per line. "
        "Events about a bulletin carry `bulletin_id`, `agency` and `revision` in both.",
    )
    operator_token: SecretStr | None = Field(
        None,
        description="Bearer token of the operators' API (`/v1/admin/...` on ingest), at least "
        "32 characters. Unset: that API answers 404, and operators use the `bantin` command.",
    )
    metrics_port: int | None = Field(
        None,
        description="Port a worker or the reconciler serves Prometheus `/metrics` on (ingest "
        "and the gateway serve it on their own port). `0`: any free port, shown by `bantin "
        "status`. Unset: no metrics server.",
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Interface the workers' and the reconciler's metrics servers listen on; "
        "`0.0.0.0` when Prometheus scrapes from another machine or container.",
    )

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        # From the gateway's port unless given: changing BANTIN_GATEWAY_PORT alone must not
        # leave every printed and published URL pointing at the old one.
        if not self.public_url:
            self.public_url = local_url(self.gateway_host, self.gateway_port)
        return self

    @field_validator("operator_token", "metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes `${VAR:-}` through as an empty string: that means "not set".
        return None if value == "" else value

    @field_validator("operator_token")
    @classmethod
    def _long_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The admin API is reachable wherever ingest is: a guessable token is an open door.
        if value is not None and len(value.get_secret_value()) < MIN_OPERATOR_TOKEN:
            raise ValueError(
                f"BANTIN_OPERATOR_TOKEN must be at least {MIN_OPERATOR_TOKEN} characters; make "
                "one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("public_url", "ingest_public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")

    @field_validator("rate_limit", "batch_rate_limit", "sign_in_rate_limit")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        limits.parse(value)  # raises on a typo: fail at start-up, not at the first write
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        for part in filter(None, (item.strip() for item in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # raises on a typo, at start-up
        return value

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        parts = (item.strip() for item in self.trusted_proxies.split(","))
        return tuple(ipaddress.ip_network(part, strict=False) for part in parts if part)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        ZoneInfo(value)  # raises on an unknown zone: fail at start-up, not at first render
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def resolved_database_url(self) -> str:  # cached: resolving a path costs a syscall or two
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'bantin.db').resolve()}"

    @property
    def resolved_ingest_url(self) -> str:
        return self.ingest_public_url or local_url(self.ingest_host, self.ingest_port)

    @property
    def resolved_site_dir(self) -> Path:
        return (self.site_dir or self.data_dir / "site").resolve()

    @property
    def embedded_redis_file(self) -> Path:
        """Where `bantin up` writes the URL of the embedded Redis it started."""
        return self.data_dir.resolve() / "redis" / "url"

    @property
    def broker_url(self) -> str:
        """The Redis all processes use: BANTIN_REDIS_URL, else the embedded one of `bantin up`."""
        if self.redis_url:
            return self.redis_url
        try:
            return self.embedded_redis_file.read_text().strip()
        except FileNotFoundError:
            raise RuntimeError(
                "BANTIN_REDIS_URL is not set and no embedded Redis is running for data dir "
                f"{self.data_dir.resolve()}: start `bantin up` or set BANTIN_REDIS_URL"
            ) from None


def local_url(host: str, port: int) -> str:
    """The URL of a server listening on host:port, as a client on this machine reaches it."""
    if host in ("0.0.0.0", "::", ""):  # every interface: loopback is one of them
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
