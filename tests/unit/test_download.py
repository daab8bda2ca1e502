"""Fetching a9a with pinned sha256 sums, against a local HTTP server serving the REAL files.

The real a9a / a9a.t bytes come from the test data directory (``real_data``: the shared data
materialised in the official layouts); the URLs in :data:`mlbench.data.libsvm.REMOTE` are pointed
at a ``http.server`` in a thread, so the whole download path (urllib, streaming, hashing, atomic
rename) runs without the internet.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlbench.cli.main import main
from mlbench.data import download, libsvm
from mlbench.errors import DataError, DownloadError
from mlbench.launch.local import free_port


@pytest.fixture(scope="module")
def real_a9a(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only the real, uncompressed ``a9a`` and ``a9a.t`` (as the LIBSVM site)."""
    out = tmp_path_factory.mktemp("site")
    for name in ("a9a", "a9a.t"):
        shutil.copy(real_data / "libsvm" / name, out / name)
    return out


class Site:
    """A static file server in a thread that records every path requested."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        site = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                site.requests.append(self.path)

        handler = functools.partial(Handler, directory=str(root))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(real_a9a: Path, tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "www"
    shutil.copytree(real_a9a, root)
    s = Site(root)
    yield s
    s.close()


def point_at(monkeypatch: pytest.MonkeyPatch, base_url: str) -> None:
    """Make libsvm's a9a entry download from ``base_url`` (same names, same pinned sums)."""
    files = tuple(dataclasses.replace(f, url=base_url + f.name) for f in libsvm.REMOTE["a9a"])
    monkeypatch.setitem(libsvm.REMOTE, "a9a", files)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_pinned_sums_are_the_real_files(real_a9a):
    for spec in libsvm.REMOTE["a9a"]:
        path = real_a9a / spec.name
        assert path.stat().st_size == spec.size
        assert download.sha256_of(path) == spec.sha256


def test_download_writes_verified_files_and_then_makes_no_request(site, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url)
    seen = []
    how = libsvm.fetch(tmp_path / "d", "a9a", progress=lambda n, d, t: seen.append((n, d, t)))
    assert how == {"a9a": "downloaded", "a9a.t": "downloaded"}
    assert site.requests == ["/a9a", "/a9a.t"]
    assert leftovers(tmp_path / "d" / "libsvm") == ["a9a", "a9a.t"]  # no temp files
    assert seen[-1] == ("a9a.t", 1_164_628, 1_164_628)
    (x_train, y_train), (x_test, _) = libsvm.load_pair(tmp_path / "d", "a9a")
    assert x_train.shape == (32_561, 123) and x_test.shape == (16_281, 123)
    assert int(y_train.sum()) == 7_841  # positives in the real a9a

    again = libsvm.fetch(tmp_path / "d", "a9a")
    assert again == {"a9a": "present", "a9a.t": "present"}
    assert len(site.requests) == 2


def test_checksum_mismatch_is_an_error_and_leaves_nothing(site, tmp_path, monkeypatch):
    served = site.root / "a9a"
    data = bytearray(served.read_bytes())
    data[1000] ^= 1  # one flipped bit in the real file
    served.write_bytes(bytes(data))
    point_at(monkeypatch, site.url)
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match=r"a9a: sha256 .* does not match") as err:
        libsvm.fetch(dest, "a9a")
    assert site.url + "a9a" in str(err.value) and "\n" not in str(err.value)
    assert leftovers(dest / "libsvm") == []


def test_a_corrupt_file_already_there_is_replaced(site, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url)
    target = tmp_path / "d" / "libsvm" / "a9a"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"+1 1:1\n")
    how = libsvm.fetch(tmp_path / "d", "a9a")
    assert how["a9a"] == "downloaded"
    assert download.sha256_of(target) == libsvm.REMOTE["a9a"][0].sha256


def test_server_down_is_a_clear_error(tmp_path, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    point_at(monkeypatch, url)
    with pytest.raises(DownloadError, match=r"^download of http://127\.0\.0\.1:\d+/a9a failed: "):
        libsvm.fetch(tmp_path / "d", "a9a")
    assert leftovers(tmp_path / "d" / "libsvm") == []


def test_http_error_names_the_url_and_status(site, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url + "missing/")
    with pytest.raises(DownloadError, match=r"missing/a9a failed: HTTP 404"):
        libsvm.fetch(tmp_path / "d", "a9a")


def test_shared_copy_is_preferred_without_any_request(site, real_a9a, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url)
    shared = tmp_path / "shared"
    (shared / "libsvm").mkdir(parents=True)
    for name in ("a9a", "a9a.t"):  # the shared folder's own layout: bz2 under libsvm/
        packed = bz2.compress((real_a9a / name).read_bytes())
        (shared / "libsvm" / f"{name}.bz2").write_bytes(packed)
    how = libsvm.fetch(tmp_path / "d", "a9a", shared=[tmp_path / "nowhere", shared])
    assert how == {"a9a": "local", "a9a.t": "local"}
    assert site.requests == []
    for spec in libsvm.REMOTE["a9a"]:
        assert download.sha256_of(tmp_path / "d" / "libsvm" / spec.name) == spec.sha256


def test_a_corrupt_shared_copy_is_an_error_not_a_silent_download(site, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a9a").write_bytes(b"+1 1:1\n")
    with pytest.raises(DownloadError, match=r"local copy .*a9a: sha256"):
        libsvm.fetch(tmp_path / "d", "a9a", shared=[shared])
    assert site.requests == []


def test_ensure_fetches_only_when_allowed(site, tmp_path, monkeypatch):
    point_at(monkeypatch, site.url)
    with pytest.raises(DataError, match=r"mlbench data fetch a9a --data-dir"):
        libsvm.ensure(tmp_path / "d", "a9a", allow_download=False)
    assert site.requests == []
    train, test = libsvm.ensure(tmp_path / "d", "a9a", allow_download=True)
    assert (train.name, test.name) == ("a9a", "a9a.t")
    assert libsvm.count_rows(train) == 32_561


def test_unknown_dataset_names_what_can_be_fetched(tmp_path):
    with pytest.raises(DataError, match=r"no download known for LIBSVM dataset 'epsilon'.*a9a"):
        libsvm.fetch(tmp_path, "epsilon")


def test_cli_fetch(site, tmp_path, monkeypatch, capsys):
    point_at(monkeypatch, site.url)
    monkeypatch.delenv(libsvm.SHARED_ENV, raising=False)
    assert main(["data", "fetch", "a9a", "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    assert capsys.readouterr().out.strip() == '{"a9a": "downloaded", "a9a.t": "downloaded"}'
    point_at(monkeypatch, f"http://127.0.0.1:{free_port()}/")
    assert main(["data", "fetch", "a9a", "--data-dir", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlbench: error: download of http://127.0.0.1:") and err.count("\n") == 1
