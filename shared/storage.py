"""Where rendered artifacts live. Writers never leave a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Protocol


class Storage(Protocol):
    def put(self, relative: PurePosixPath | str, data: bytes) -> None: ...
    def get(self, relative: PurePosixPath | str) -> bytes | None: ...
    def delete(self, relative: PurePosixPath | str) -> None: ...


class LocalStorage:
    """A directory on disk: the embedded default, and a shared volume in production."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, relative: PurePosixPath | str) -> Path:
        path = (self.root / str(relative).lstrip("/")).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{relative!r} is outside the site directory")
        return path

    def put(self, relative: PurePosixPath | str, data: bytes) -> None:
        """Write atomically: readers see the old file or the new one, never a torn one.

        No fsync: every artifact can be rebuilt from the database, and skipping it keeps a
        page write well under a millisecond.
        """
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=target.suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the gateway may run as another user
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, relative: PurePosixPath | str) -> bytes | None:
        try:
            return self.path(relative).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def delete(self, relative: PurePosixPath | str) -> None:
        self.path(relative).unlink(missing_ok=True)
