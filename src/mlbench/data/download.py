"""Download a dataset file once, check it against a pinned sha256, and never leave half a file.

Why this shape:

* **Pinned checksums, not "whatever the server sent".** A benchmark result is only comparable if
  everyone trained on the same bytes, so every fetchable file carries the sha256 of the real file
  and a mismatch is an error, not a warning.
* **Atomic.** The bytes go to a temporary file beside the destination and are renamed into place
  only after the checksum matched; an interrupted or corrupt download leaves nothing behind that a
  later run could mistake for the dataset.
* **A local copy first.** Machines with a shared dataset folder (a lab mirror, a CI cache) should
  not hit the dataset's home page; a verified local copy (plain or ``.bz2``) is used without any
  network request.
* **No printing.** This is the data layer; progress goes to an optional callback that the CLI
  renders.

Errors are :class:`~mlbench.errors.DownloadError`: one line, naming the URL (or local file).
"""

from __future__ import annotations

import bz2
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mlbench.errors import DownloadError

CHUNK = 1 << 16
#: ``progress(file_name, done_bytes, total_bytes)``, called after every downloaded chunk.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives on the internet and what its bytes must hash to."""

    name: str  #: file name under the dataset directory, e.g. ``a9a.t``
    url: str
    sha256: str  #: of the file as stored on disk (here: the uncompressed LIBSVM text)
    size: int  #: bytes, for the progress bar and a cheap early check


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def sha256_of(path: Path) -> str:
    return file_hash(path, "sha256")


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _chunks(stream: _Readable) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _write_verified(
    dest: Path, chunks: Iterable[bytes], spec: RemoteFile, source: str, progress: Progress | None
) -> None:
    """Stream ``chunks`` into a temp file beside ``dest``; rename only if the sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest, done = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(spec.name, done, spec.size)
        got = digest.hexdigest()
        if got != spec.sha256:
            raise DownloadError(
                f"{source}: sha256 {got} ({done} bytes) does not match the expected "
                f"{spec.sha256} ({spec.size} bytes); nothing was written"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _local_copy(dest: Path, spec: RemoteFile, copies: Iterable[Path]) -> bool:
    """Install the first existing local copy (``.bz2`` is decompressed) after checking it.

    A local copy with the wrong checksum is an error rather than a silent fall-through to the
    network: a corrupt mirror should be fixed, not papered over on one machine and not another.
    """
    for path in copies:
        if not path.is_file():
            continue
        try:
            opener = bz2.open if path.suffix == ".bz2" else open
            with opener(path, "rb") as fh:
                _write_verified(dest, _chunks(fh), spec, f"local copy {path}", None)
        except (OSError, EOFError) as exc:
            raise DownloadError(f"local copy {path} cannot be read: {exc}") from None
        return True
    return False


def fetch(
    spec: RemoteFile,
    dest: Path,
    *,
    local_copies: Iterable[Path] = (),
    progress: Progress | None = None,
    timeout: float = 60.0,
) -> str:
    """Make ``dest`` hold ``spec``'s verified bytes; returns how: ``present|local|downloaded``.

    Order: an existing ``dest`` that already matches is kept (no request); otherwise the first of
    ``local_copies`` that exists is verified and installed (no request); otherwise ``spec.url`` is
    downloaded. An existing ``dest`` that does *not* match is replaced, never trusted.
    """
    if dest.is_file() and dest.stat().st_size == spec.size and sha256_of(dest) == spec.sha256:
        return "present"
    if _local_copy(dest, spec, local_copies):
        return "local"
    request = urllib.request.Request(spec.url, headers={"User-Agent": "mlbench"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            _write_verified(dest, _chunks(resp), spec, spec.url, progress)
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"download of {spec.url} failed: HTTP {exc.code} {exc.reason}"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"download of {spec.url} failed: {reason}") from None
    return "downloaded"
