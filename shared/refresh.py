"""Coalesced rebuilds of index pages and feeds: single-flight with a generation counter.

A burst of 100 bulletins for one agency must not rebuild its feed 100 times, and no bulletin
may be left out of the feed. A fixed debounce delay would add its whole length to every
publish; single-flight does not:

- `request` bumps the listing's *wanted* generation, and enqueues a build only if no build of
  that listing is running (a Redis lock taken with SET NX).
- the build task notes the wanted generation, builds from the database, records it as
  *done*, and releases the lock only if nothing was requested meanwhile; otherwise it builds
  once more. So one build runs at low load, and at most one per listing is in flight at high
  load, however many bulletins arrive.
- a build killed mid-way leaves wanted > done; once its lock expires the reconciler
  (`pending`) finds it and requests it again.
- each build records the fingerprint of the rows it showed (`built`); the reconciler compares
  it with the database now and then, which catches whatever the counters cannot (a trigger
  lost between a commit and its request, a Redis restart that wiped the counters).
- `since` holds the time of the oldest request no build has started to cover yet (set by the
  first request, cleared by the build that starts covering it): `owed_since` gives the age
  of the oldest listing build owed, which shared/queues.py reports per queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from celery import Celery, Task
from redis import Redis

from shared.celery_app import BUILD_FEEDS, RENDER_LISTING
from shared.site import ARCHIVE_CHECK, Listing, ListingKind

# Builds read the newest few dozen rows and take milliseconds; the builder renews the lock on
# every round. A lock whose holder died (or whose task message went down with a killed worker
# between taking the lock and sending) frees itself after this, and the reconciler restarts
# the build: this bounds recovery from such a kill.
LOCK_TTL_SECONDS = 15
# Under sustained load a listing is rebuilt at most this often; at rest, at once.
MIN_REBUILD_INTERVAL = 0.1
# The same for a listing's feeds (RSS, Atom, JSON and their .gz files: ~10 ms of CPU a build
# where the index page takes ~3 ms). Readers poll feeds, nobody waits on them the way a
# clerk waits for the page: at 200 bulletins/s, 0.1 s meant 30 feed builds a second for
# one agency's bulletins (its feeds, its category's, the site's), 0.25 s means 12.
FEED_REBUILD_INTERVAL = 0.25
# The same for sitemaps: crawlers read them minutes apart, and the index and the current
# month read a month or the whole archive (~70 ms per 100,000 bulletins on SQLite, measured),
# too much to repeat ten times a second during a burst.
SITEMAP_REBUILD_INTERVAL = 5.0
# An archive month reads the whole month's (id, revision) list and may build a part of up to
# `archive_items` entries: at most once a second under load. A listing's archive check walks
# every month, like the sitemap index.
ARCHIVE_REBUILD_INTERVAL = 1.0


class Job(StrEnum):
    PAGE = "page"  # the listing's HTML index page, on the render queue
    FEED = "feed"  # the listing's RSS and Atom feeds, on the feed queue


_TASK_FOR_JOB = {Job.PAGE: RENDER_LISTING, Job.FEED: BUILD_FEEDS}
TARGETS_KEY = "bantin:refresh:targets"

# Atomically: record `done`, then either release the lock (nothing new wanted) or keep it
# (and its TTL fresh) and tell the builder to go round again. Releasing also clears `since`:
# a request whose INCR the build covered may have set it just after the build started. And
# it drops the target from TARGETS_KEY (which `pending` reads every pass, and which would
# otherwise keep every archive month ever built): a request that comes after this script
# runs its INCR and then its SADD after it too (one pipeline, in order), so it puts the
# target back; one whose INCR came before makes wanted > done here, and nothing is dropped.
_FINISH = """
redis.call('SET', KEYS[2], ARGV[1])
local wanted = tonumber(redis.call('GET', KEYS[1]) or '0')
if wanted > tonumber(ARGV[1]) then
    redis.call('EXPIRE', KEYS[3], ARGV[2])
    return 1
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[3])
return 0
"""

# A publish asks for about a dozen builds (its listings' pages and feeds, sitemaps, archive
# months). Per build, in order: count the request, note the target, take the build's lock if
# free (the reply: 1 when this request starts the build), note the oldest uncovered request.
# One script call instead of four commands a build in a pipeline: the client-side packing
# and parsing of those 44 commands cost more CPU than the render's own page write (measured).
# KEYS: TARGETS_KEY, then (wanted, lock, since) per build; ARGV: now, lock TTL, then the
# target's member name per build.
_REQUEST = """
local started = {}
for i = 1, (#KEYS - 1) / 3 do
    local base = 1 + (i - 1) * 3
    redis.call('INCR', KEYS[base + 1])
    redis.call('SADD', KEYS[1], ARGV[2 + i])
    if redis.call('SET', KEYS[base + 2], '1', 'NX', 'EX', ARGV[2]) then
        started[i] = 1
    else
        started[i] = 0
    end
    redis.call('SET', KEYS[base + 3], ARGV[1], 'NX')
end
return started
"""


def _keys(job: Job, listing: Listing) -> tuple[str, str, str]:
    base = _base(job, listing)
    return f"{base}:wanted", f"{base}:done", f"{base}:lock"


def _since_key(job: Job, listing: Listing) -> str:
    return f"{_base(job, listing)}:since"


def _member(job: Job, listing: Listing) -> str:
    return f"{job.value}|{listing.target}"  # in TARGETS_KEY


def _base(job: Job, listing: Listing) -> str:
    return f"bantin:refresh:{job.value}:{listing.target}"


class Refresher:
    def __init__(
        self,
        redis: Redis,
        celery: Celery,
        *,
        page_interval: float = MIN_REBUILD_INTERVAL,
        feed_interval: float = FEED_REBUILD_INTERVAL,
    ) -> None:
        """`page_interval`, `feed_interval`: the least time between two builds of a busy
        listing's index page and of its feeds (BANTIN_LISTING_REBUILD_SECONDS and
        BANTIN_FEED_REBUILD_SECONDS in the workers; docs/capacity.md says what they cost)."""
        self.redis = redis
        self.celery = celery
        self.page_interval = page_interval
        self.feed_interval = feed_interval
        self._finish = redis.register_script(_FINISH)
        self._request = redis.register_script(_REQUEST)

    def request(self, job: Job, listing: Listing) -> bool:
        """Ask for a rebuild; True when this call started a build (False: one is running)."""
        return self.request_many([(job, listing)]) == 1

    def request_many(self, wanted_builds: list[tuple[Job, Listing]]) -> int:
        """Ask for several rebuilds in one round trip; returns how many builds this started."""
        if not wanted_builds:
            return 0
        keys = [TARGETS_KEY]
        args: list[str | int] = [repr(time.time()), LOCK_TTL_SECONDS]
        for job, listing in wanted_builds:
            wanted, _done, lock = _keys(job, listing)
            keys += [wanted, lock, _since_key(job, listing)]
            args.append(_member(job, listing))
        replies = self._request(keys=keys, args=args)
        started = 0
        for (job, listing), acquired in zip(wanted_builds, replies, strict=True):
            if acquired:
                self._send_or_unlock(job, listing)
                started += 1
        return started

    def _send_or_unlock(self, job: Job, listing: Listing) -> None:
        try:
            self._send(job, listing)
        except Exception:
            self.release(job, listing)  # no build will run: let the next request start one
            raise

    def _send(self, job: Job, listing: Listing) -> None:
        self.celery.send_task(_TASK_FOR_JOB[job], args=[listing.target])

    def run(self, job: Job, listing: Listing, build: Callable[[], str]) -> float | None:
        """Build once; returns None when no request is outstanding, else the delay after
        which the caller must build again (it keeps the lock meanwhile).

        Called by the build task, which holds the lock `request` took for it. `build` returns
        the fingerprint of what it built. The delay makes a listing under sustained load
        rebuild at most every MIN_REBUILD_INTERVAL (FEED_REBUILD_INTERVAL for its feeds,
        SITEMAP_REBUILD_INTERVAL for a sitemap)
        instead of back to back: with 200
        bulletins/s, back-to-back rebuilds of the home page, the agency and category pages
        kept three render processes busy and starved the article renders (measured).
        """
        wanted, done, lock = _keys(job, listing)
        started = time.monotonic()
        # This build covers every request counted so far: they are no longer waiting.
        start = self.redis.pipeline()
        start.get(wanted)
        start.delete(_since_key(job, listing))
        generation = int(start.execute()[0] or 0)
        built = build()
        pipe = self.redis.pipeline()
        pipe.set(f"{_base(job, listing)}:built", built)
        pipe.incr(f"bantin:stats:builds:{job.value}:{listing.target}")
        pipe.execute()
        keys = [wanted, done, lock, _since_key(job, listing), TARGETS_KEY]
        args: list[str | int] = [generation, LOCK_TTL_SECONDS, _member(job, listing)]
        if not self._finish(keys=keys, args=args):
            return None
        interval = rebuild_interval(listing, job, page=self.page_interval, feed=self.feed_interval)
        return max(0.0, interval - (time.monotonic() - started))

    def extend(self, job: Job, listing: Listing) -> None:
        """Renew the build's lock for another LOCK_TTL_SECONDS: a long build (an archive
        month of many parts) calls it as it goes, so no second builder starts meanwhile."""
        self.redis.expire(_keys(job, listing)[2], LOCK_TTL_SECONDS)

    def release(self, job: Job, listing: Listing) -> None:
        """Give up the lock after a failed build, leaving wanted > done for the reconciler."""
        self.redis.delete(_keys(job, listing)[2])

    def built(self, job: Job, listing: Listing) -> str | None:
        """The fingerprint of the last completed build (None: never built, or Redis lost it)."""
        value = self.redis.get(f"{_base(job, listing)}:built")
        return value.decode() if isinstance(value, bytes) else value

    def built_many(self, job: Job, listings: list[Listing]) -> list[str | None]:
        """`built` of each listing, in one round trip."""
        if not listings:
            return []
        values = self.redis.mget([f"{_base(job, listing)}:built" for listing in listings])
        return [value.decode() if isinstance(value, bytes) else value for value in values]

    def builds(self, job: Job, listing: Listing) -> int:
        """How many builds of this listing ever ran (for operators and tests)."""
        return int(self.redis.get(f"bantin:stats:builds:{job.value}:{listing.target}") or 0)

    def builds_many(self, wanted: list[tuple[Job, Listing]]) -> list[int]:
        """`builds` of each (job, listing), in one round trip."""
        if not wanted:
            return []
        keys = [f"bantin:stats:builds:{job.value}:{listing.target}" for job, listing in wanted]
        return [int(value or 0) for value in self.redis.mget(keys)]

    def pending(self) -> list[tuple[Job, Listing]]:
        """Listings wanting a build that nobody is running: lost triggers, killed builds."""
        stuck = []
        builds = []
        for member in self.redis.smembers(TARGETS_KEY):
            text = member.decode() if isinstance(member, bytes) else str(member)
            job_name, _, target = text.partition("|")
            builds.append((Job(job_name), Listing.from_target(target)))
        # One round trip per chunk, not per build: with RFC 5005 archives there is a build
        # per listing and month, tens of thousands on a large site, read every pass.
        for start in range(0, len(builds), 1000):
            chunk = builds[start : start + 1000]
            pipe = self.redis.pipeline(transaction=False)
            for job, listing in chunk:
                pipe.mget(*_keys(job, listing))
            for (job, listing), (want, have, locked) in zip(chunk, pipe.execute(), strict=True):
                if int(want or 0) > int(have or 0) and locked is None:
                    stuck.append((job, listing))
        return stuck

    def kick(self, job: Job, listing: Listing) -> bool:
        """Start a build for a pending listing unless one started meanwhile."""
        if self.redis.set(_keys(job, listing)[2], "1", nx=True, ex=LOCK_TTL_SECONDS):
            self._send_or_unlock(job, listing)
            return True
        return False


def rebuild_interval(
    listing: Listing,
    job: Job = Job.PAGE,
    *,
    page: float = MIN_REBUILD_INTERVAL,
    feed: float = FEED_REBUILD_INTERVAL,
) -> float:
    """The least time between two builds of `listing` (its `job`: the index page or the
    feeds) while requests keep coming; `page` and `feed` are a Refresher's own intervals."""
    if listing.kind in (ListingKind.SITEMAP, ListingKind.DOCUMENTS):
        # /van-ban/ counts the live citers of every document: its query aggregates every
        # citation of the site, like a sitemap reads a month or the whole archive.
        return SITEMAP_REBUILD_INTERVAL
    if listing.kind is ListingKind.ARCHIVE:
        check = listing.archive_scope[1] == ARCHIVE_CHECK
        return SITEMAP_REBUILD_INTERVAL if check else ARCHIVE_REBUILD_INTERVAL
    return feed if job is Job.FEED else page


def owed_since(redis: Redis, job: Job) -> float | None:
    """Unix time of the oldest request for a `job` build that no build covers yet (None:
    nothing waits). Reads one key per listing in one round trip."""
    prefix = f"{job.value}|"
    targets = [
        text
        for member in redis.smembers(TARGETS_KEY)
        if (text := member.decode() if isinstance(member, bytes) else str(member)).startswith(
            prefix
        )
    ]
    if not targets:
        return None
    keys = [f"bantin:refresh:{job.value}:{t.partition('|')[2]}:since" for t in targets]
    times = [float(value) for value in redis.mget(keys) if value is not None]
    return min(times, default=None)


def build_in_task(
    task: Task, refresher: Refresher, job: Job, listing: Listing, build: Callable[[], str]
) -> None:
    """Run `Refresher.run` inside a bound Celery task, retrying with backoff on errors.

    The task keeps the listing's lock while it retries or waits to build again (it is the
    listing's one builder) and gives it up when retries run out, so the reconciler can start
    afresh. Building again is a new message with a short countdown, so the worker process
    renders articles in the meantime instead of sleeping.
    """
    try:
        again_in = refresher.run(job, listing, build)
        if again_in is not None:
            task.apply_async(args=[listing.target], countdown=again_in)
    except Exception as exc:
        retries = task.request.retries
        if task.max_retries is not None and retries >= task.max_retries:
            refresher.release(job, listing)
            raise
        raise task.retry(exc=exc, countdown=min(2**retries, 30)) from exc
