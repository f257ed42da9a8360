"""Where rendered artifacts live: a local directory, or an S3-compatible bucket
(``BANTIN_STORAGE_URL``; ``open_storage`` picks). Writers never leave a half-written file behind.

Every compressible artifact gets a precompressed sibling, ``<file>.gz``, written just before
it and removed just before it, so that nginx (``gzip_static``) answers gzip requests from disk
with no compression of its own, and a reader never finds a ``.gz`` whose original is gone.
In a bucket every object carries its ``Content-Type`` and ``Cache-Control`` (and the ``.gz``
its original's type with ``Content-Encoding: gzip``), so a proxy or CDN can serve it as is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import parse_qsl, urlsplit

from shared.filetypes import TOMBSTONE_TYPE, FileType, file_type, gzip_variant
from shared.site import TOMBSTONE_DIR

if TYPE_CHECKING:
    from shared.settings import Settings


class Storage(Protocol):
    def put(self, relative: PurePosixPath | str, data: bytes) -> None: ...
    def get(self, relative: PurePosixPath | str) -> bytes | None: ...
    def delete(self, relative: PurePosixPath | str) -> None: ...
    def exists(self, relative: PurePosixPath | str) -> bool: ...
    def exists_many(self, relatives: Iterable[PurePosixPath | str]) -> set[str]:
        """``str(relative)`` of each of ``relatives`` that exists; raises as ``exists`` does."""
        ...


class LocalStorage:
    """A directory on disk: the embedded default, and a shared volume in production."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        # Site-relative directory -> its resolved, existing path. Resolving a path costs an
        # lstat per component and mkdir another syscall; a site has few directories and
        # writes to them over and over (measured: 230 µs of CPU a page write before, 90 µs
        # with this and counter-based temporary names, in a 50k-page rebuild).
        self._directories: dict[PurePosixPath, Path] = {}
        self._temp_names = itertools.count()

    def path(self, relative: PurePosixPath | str) -> Path:
        path = (self.root / str(relative).lstrip("/")).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{relative!r} is outside the site directory")
        return path

    def _directory(self, parent: PurePosixPath) -> Path:
        directory = self._directories.get(parent)
        if directory is None:
            directory = self.path(parent)  # refuses anything outside the site
            directory.mkdir(parents=True, exist_ok=True)
            self._directories[parent] = directory
        return directory

    def put(self, relative: PurePosixPath | str, data: bytes) -> None:
        """Write ``relative`` and its ``.gz`` sibling (or remove a sibling it no longer needs)."""
        relative = PurePosixPath(str(relative).lstrip("/"))
        if relative.name in ("", ".", ".."):
            raise ValueError(f"{str(relative)!r} names no file")
        sibling = gz_sibling(relative)
        compressed = gzip_variant(str(relative), data)
        if compressed is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._directory(relative.parent) / sibling.name)
        else:
            self._write(sibling, compressed)
        try:
            self._write(relative, data)
        except BaseException:
            if compressed is not None:
                self._match_sibling(relative, sibling)
            raise

    def _match_sibling(self, relative: PurePosixPath, sibling: PurePosixPath) -> None:
        """After a failed write, make the ``.gz`` match the file still there (or go with it):
        gzip clients must never get other bytes than identity clients. Best effort."""
        with contextlib.suppress(OSError):
            current = self.get(relative)
            compressed = None if current is None else gzip_variant(str(relative), current)
            if compressed is None:
                os.unlink(self._directory(relative.parent) / sibling.name)
            else:
                self._write(sibling, compressed)

    def _write(self, relative: PurePosixPath, data: bytes) -> None:
        """Write atomically: readers see the old file or the new one, never a torn one.

        The data goes to a temporary dot-file beside the target (never served), made 0644
        whatever the umask (the gateway may run as another user), then renamed into place.
        No fsync: every artifact can be rebuilt from the database, and skipping it keeps a
        page write well under a millisecond.
        """
        directory = self._directory(relative.parent)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            temporary = directory / f".tmp-{os.getpid()}-{next(self._temp_names)}"
            try:
                fd = os.open(temporary, flags, 0o644)
                break
            except FileExistsError:  # left by a dead process that had our pid: next name
                continue
            except FileNotFoundError:  # the directory went away since we cached it
                self._directories.pop(relative.parent, None)
                directory = self._directory(relative.parent)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, 0o644)
            finally:
                os.close(fd)
            os.replace(temporary, directory / relative.name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def get(self, relative: PurePosixPath | str) -> bytes | None:
        try:
            return self.path(relative).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def delete(self, relative: PurePosixPath | str) -> None:
        relative = PurePosixPath(str(relative).lstrip("/"))
        self.path(gz_sibling(relative)).unlink(missing_ok=True)
        self.path(relative).unlink(missing_ok=True)

    def exists(self, relative: PurePosixPath | str) -> bool:
        return self.path(relative).is_file()

    def exists_many(self, relatives: Iterable[PurePosixPath | str]) -> set[str]:
        """``str(relative)`` of each of ``relatives`` that is a file (a stat each)."""
        return {str(relative) for relative in relatives if self.exists(relative)}


def gz_sibling(relative: PurePosixPath) -> PurePosixPath:
    """Where the precompressed form of ``relative`` lives: nginx's gzip_static looks there."""
    return relative.with_name(relative.name + ".gz")


class StorageURLError(ValueError):
    """A ``BANTIN_STORAGE_URL`` that does not say where a bucket is."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """What ``s3://BUCKET/PREFIX?endpoint=URL&region=NAME`` says."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root
    endpoint: str | None = None
    region: str | None = None


_S3_PARAMETERS = frozenset({"endpoint", "region"})


def parse_storage_url(url: str) -> S3Location:
    """Read an S3 storage URL, refusing anything it does not understand (a typo in a query
    parameter must not silently send the site to AWS instead of the intended endpoint)."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise StorageURLError(f"BANTIN_STORAGE_URL {url!r}: expected s3://BUCKET/PREFIX")
    bucket = parts.netloc
    if not bucket or "@" in bucket or ":" in bucket or parts.fragment:
        raise StorageURLError(f"BANTIN_STORAGE_URL {url!r}: expected s3://BUCKET/PREFIX")
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StorageURLError(f"BANTIN_STORAGE_URL {url!r}: the prefix has an empty, . or .. part")
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise StorageURLError(f"BANTIN_STORAGE_URL {url!r}: cannot read its query") from None
    found: dict[str, str] = {}
    for name, value in query:
        if name not in _S3_PARAMETERS:
            raise StorageURLError(
                f"BANTIN_STORAGE_URL {url!r}: unknown parameter {name!r} (endpoint, region)"
            )
        if name in found or not value:
            raise StorageURLError(f"BANTIN_STORAGE_URL {url!r}: {name} given twice or empty")
        found[name] = value
    endpoint = found.get("endpoint")
    if endpoint is not None:
        target = urlsplit(endpoint)
        if target.scheme not in ("http", "https") or not target.netloc:
            raise StorageURLError(
                f"BANTIN_STORAGE_URL {url!r}: endpoint must be an http(s)://HOST[:PORT] URL"
            )
    return S3Location(bucket, prefix, endpoint, found.get("region"))


@dataclass(frozen=True, slots=True)
class Fetched:
    """An object as read from the bucket, with what revalidates it."""

    body: bytes
    etag: str  # the store's own tag, for a later conditional GET
    last_modified: float  # epoch seconds


class _NotModified(Enum):
    NOT_MODIFIED = "not modified"


NOT_MODIFIED: Final = _NotModified.NOT_MODIFIED
FetchResult = Fetched | Literal[_NotModified.NOT_MODIFIED] | None

# Seconds; a stuck connection must fail a task (which is retried) rather than hang a worker.
S3_CONNECT_TIMEOUT = 5
S3_READ_TIMEOUT = 30
# Threads share one client: the gateway runs many reads at once off its event loop.
S3_MAX_CONNECTIONS = 32
# Tries per request (botocore's "standard" retries: throttling, 5xx, dropped connections).
S3_ATTEMPTS = 4
# HEADs in flight at once in `exists_many` (the reconciler checks up to 1,000 pages a pass):
# round trips overlap, and it stays well under the client's connection pool.
S3_EXISTS_THREADS = 16


class S3Storage:
    """An S3-compatible bucket. One boto3 client per process, made on first use: clients are
    thread-safe, but a client made before a fork (Celery's prefork pool) must not be shared
    by the children, so a new process makes its own."""

    def __init__(self, location: S3Location, *, attempts: int = S3_ATTEMPTS) -> None:
        self.location = location
        self.attempts = attempts
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0

    @classmethod
    def from_url(cls, url: str, *, attempts: int = S3_ATTEMPTS) -> S3Storage:
        return cls(parse_storage_url(url), attempts=attempts)

    @property
    def client(self) -> Any:
        client = self._client
        if client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._new_client()
                    self._pid = os.getpid()
                client = self._client
        return client

    def _new_client(self) -> Any:
        import boto3  # only S3 deployments pay for importing it
        from botocore.config import Config

        config = Config(
            connect_timeout=S3_CONNECT_TIMEOUT,
            read_timeout=S3_READ_TIMEOUT,
            retries={"max_attempts": self.attempts, "mode": "standard"},
            max_pool_connections=S3_MAX_CONNECTIONS,
            # Path-style works with every S3-compatible server (MinIO, moto, Ceph); AWS too.
            s3={"addressing_style": "path"},
            # No CRC32 of every body unless an operation requires one: CPU per put saved, and
            # S3-compatible servers that predate the newer checksum headers keep working.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        client = session.client(
            "s3",
            endpoint_url=self.location.endpoint,
            region_name=self.location.region or "us-east-1",
            config=config,
        )
        client.meta.events.register("before-send.s3.PutObject", _no_expect_continue)
        return client

    def key(self, relative: PurePosixPath | str) -> str:
        """The object key of a site-relative path; ``ValueError`` for one that could leave
        the prefix or names no file."""
        text = str(relative).lstrip("/")
        parts = text.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"{str(relative)!r} is not a plain site-relative path")
        return f"{self.location.prefix}/{text}" if self.location.prefix else text

    def put(self, relative: PurePosixPath | str, data: bytes) -> None:
        """Upload ``relative`` after its ``.gz`` sibling (or after removing a stale one)."""
        key = self.key(relative)
        text = str(relative).lstrip("/")
        kind = object_type(text)
        compressed = gzip_variant(text, data)
        if compressed is None:
            self.client.delete_object(Bucket=self.location.bucket, Key=key + ".gz")
        else:
            self._upload(key + ".gz", compressed, kind, encoding="gzip")
        try:
            self._upload(key, data, kind)
        except BaseException:
            if compressed is not None:
                self._match_sibling(relative, key, kind)
            raise

    def _match_sibling(self, relative: PurePosixPath | str, key: str, kind: FileType) -> None:
        """As LocalStorage's: after a failed upload the ``.gz`` follows the object still there.
        Best effort: a bucket that refused the upload may refuse this too."""
        with contextlib.suppress(Exception):
            current = self.get(relative)
            text = str(relative).lstrip("/")
            compressed = None if current is None else gzip_variant(text, current)
            if compressed is None:
                self.client.delete_object(Bucket=self.location.bucket, Key=key + ".gz")
            else:
                self._upload(key + ".gz", compressed, kind, encoding="gzip")

    def _upload(
        self, key: str, data: bytes, kind: FileType, *, encoding: str | None = None
    ) -> None:
        extra: dict[str, str] = {}
        if encoding is not None:
            extra["ContentEncoding"] = encoding
        self.client.put_object(
            Bucket=self.location.bucket,
            Key=key,
            Body=data,
            ContentType=kind.content_type.decode(),
            CacheControl=f"public, max-age={kind.max_age}",
            **extra,
        )

    def get(self, relative: PurePosixPath | str) -> bytes | None:
        found = self.fetch(relative)
        return found.body if isinstance(found, Fetched) else None

    def fetch(self, relative: PurePosixPath | str, etag: str | None = None) -> FetchResult:
        """The object, ``NOT_MODIFIED`` when its tag is still `etag`, ``None`` when absent."""
        from botocore.exceptions import ClientError

        arguments: dict[str, str] = {"Bucket": self.location.bucket, "Key": self.key(relative)}
        if etag is not None:
            arguments["IfNoneMatch"] = etag
        try:
            answer = self.client.get_object(**arguments)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 304 or code == "304":
                return NOT_MODIFIED
            if code != "NoSuchBucket" and (status == 404 or code in ("NoSuchKey", "404")):
                return None  # a missing bucket is an error, never a site with no pages
            raise
        with answer["Body"] as body:
            data = body.read()
        modified: datetime = answer["LastModified"]
        return Fetched(data, answer["ETag"], modified.timestamp())

    def delete(self, relative: PurePosixPath | str) -> None:
        key = self.key(relative)
        self.client.delete_object(Bucket=self.location.bucket, Key=key + ".gz")
        self.client.delete_object(Bucket=self.location.bucket, Key=key)

    def exists(self, relative: PurePosixPath | str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self.key(relative))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    def exists_many(self, relatives: Iterable[PurePosixPath | str]) -> set[str]:
        """``str(relative)`` of each of ``relatives`` whose object exists: HEADs on a few
        threads sharing the one client. The first error (a bucket that does not answer, a
        path outside the prefix) is raised once the HEADs in flight end, and the rest are
        never sent: an unanswered HEAD must never pass for a missing page."""
        wanted = [(str(relative), self.key(relative)) for relative in relatives]
        if not wanted:
            return set()
        client = self.client  # made here, not raced for by the threads
        bucket = self.location.bucket

        def head(key: str) -> bool:
            from botocore.exceptions import ClientError

            try:
                client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return False
                raise
            return True

        pool = ThreadPoolExecutor(
            min(S3_EXISTS_THREADS, len(wanted)), thread_name_prefix="s3-exists"
        )
        try:
            futures = [pool.submit(head, key) for _, key in wanted]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error: send no more HEADs
        for future in done:
            error = future.exception()
            if error is not None:
                raise error
        found = {text for (text, _), future in zip(wanted, futures, strict=True) if future.result()}
        if len(found) < len(wanted):
            # A HEAD's 404 has no body to tell a missing key from a missing bucket: make sure
            # the bucket is there (raises if not) before answering that pages are missing.
            client.head_bucket(Bucket=bucket)
        return found

    def reachable(self) -> bool:
        """Whether the bucket answers (the gateway's health check)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.location.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True


def _no_expect_continue(request: Any, **_: Any) -> None:
    """Send a put's body at once: ``Expect: 100-continue`` (which boto3 adds to every put)
    costs a round trip per object, and artifacts are small. The header is never signed."""
    request.headers.pop("Expect", None)


def object_type(relative: str) -> FileType:
    """The type an object is stored with: a tombstone is always the HTML notice."""
    if relative.startswith(TOMBSTONE_DIR + "/"):
        return TOMBSTONE_TYPE
    return file_type(relative)


def open_storage(settings: Settings) -> LocalStorage | S3Storage:
    """The store ``settings`` name: the site directory unless ``storage_url`` is set."""
    if not settings.storage_url:
        return LocalStorage(settings.resolved_site_dir)
    return S3Storage.from_url(settings.storage_url)
