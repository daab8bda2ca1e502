"""Browser tests: Debian's headless Chromium driven by Playwright against a real ``mlbench serve``.

Every test page records what went wrong in the browser (console errors, uncaught exceptions,
failed requests, HTTP errors it did not expect, any request that leaves the master) and fails the
test at teardown if anything did. Screenshots go to ``test-output/screenshots/`` at the repo root.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import REPO
from ..server.master import Master

SHOTS = REPO / "test-output" / "screenshots"
# a few seconds of real output on every rank's stderr while it starts (c10d's rendezvous log
# lines): workers print nothing else, and the tests watch output arrive live
WORKER_LOG_ENV = {"TORCH_CPP_LOG_LEVEL": "INFO"}


def start_master(home: Path, *args: str, env: dict[str, str] | None = None) -> Master:
    """``Master.start`` with extra environment for the master and the runs it launches."""
    m = Master(home, *args)
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        m.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return m


def stop_master(m: Master) -> None:
    if m.proc and m.proc.poll() is None:
        m.proc.terminate()
        m.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def dash(tmp_path_factory: pytest.TempPathFactory, real_data: Path) -> Iterator[Master]:
    """A scheduling master (capacity 2 workers, the real datasets) shared by the browser tests.
    Capacity 2 runs a 2-worker and a 1-worker run one after the other, which on a 2-core
    machine finishes both sooner than running them side by side."""
    home = tmp_path_factory.mktemp("dashboard") / "home"
    m = start_master(
        home, "--capacity-workers", "2", "--data-dir", str(real_data), env=WORKER_LOG_ENV
    )
    yield m
    stop_master(m)


def api(master: Master) -> httpx.Client:
    return httpx.Client(base_url=master.url, headers=master.headers, timeout=30)


@dataclass
class Watch:
    """What went wrong in a page; ``expect(status)`` allows HTTP errors a test provokes."""

    origin: str
    problems: list[str] = field(default_factory=list)
    expected: set[int] = field(default_factory=set)
    down: bool = False

    def expect(self, *statuses: int) -> None:
        self.expected.update(statuses)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Requests may fail inside (the master is down); leave only once the page has noticed
        the master is back, so every failure it saw was reported inside."""
        self.down = True
        try:
            yield
        finally:
            self.down = False

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("request", self._request)

    def _console(self, msg: Any) -> None:
        # Chromium logs every HTTP error status as a console error too; those are judged by
        # _response (where a test can expect them)
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.problems.append(f"console error: {msg.text}")

    def _failed(self, req: Any) -> None:
        if self.down:
            return
        # leaving a page aborts its live streams and in-flight reads (the pages pass an
        # AbortSignal to every GET): that is the dashboard cancelling them, not a failure. A
        # master error is an HTTP status (judged in _response) or a connection error.
        if req.failure == "net::ERR_ABORTED" and req.method == "GET":
            return
        self.problems.append(f"request failed: {req.method} {req.url} {req.failure}")

    def _response(self, res: Any) -> None:
        if res.status >= 400 and res.status not in self.expected:
            self.problems.append(f"HTTP {res.status}: {res.request.method} {res.url}")

    def _request(self, req: Any) -> None:
        url = req.url
        if not (url.startswith(self.origin) or url.startswith(("data:", "blob:"))):
            self.problems.append(f"request outside the master: {url}")


@pytest.fixture
def page_for(browser: Any) -> Iterator[Any]:
    """``page_for(master, token=True)``: a fresh browser context (own storage) on ``master``,
    watched; with ``token`` the master's admin token is in local storage before the page runs."""
    opened: list[tuple[Any, Watch]] = []

    def make(master: Master, token: bool = True) -> Any:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        if token:
            ctx.add_init_script(f"localStorage.setItem('mlbench.token', {master.token!r})")
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        watch = Watch(master.url)
        watch.attach(page)
        page.watch = watch
        opened.append((ctx, watch))
        return page

    yield make
    problems = [p for _, w in opened for p in w.problems]
    for ctx, _ in opened:
        ctx.close()
    assert not problems, "\n".join(problems)


def screenshot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.mouse.move(0, 0)  # no hover labels or chart toolbars in the picture
    page.wait_for_timeout(300)
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_ready(page: Any, testid: str, timeout: float = 20_000) -> None:
    """Until the chart ``testid`` has been drawn (Chart sets data-ready after Plotly.react)."""
    page.wait_for_selector(f'[data-testid="{testid}"][data-ready="1"]', timeout=timeout)


def plotted(page: Any, testid: str) -> list[dict[str, Any]]:
    """The traces Plotly drew in chart ``testid``: [{name, x, y}, ...]."""
    return page.evaluate(
        """(id) => (document.querySelector(`[data-testid="${id}"]`).data || []).map(
             (t) => ({name: t.name, x: Array.from(t.x || []), y: Array.from(t.y || [])}))""",
        testid,
    )


def js(v: Any) -> str:
    """A JSON value as the dashboard shows it (JavaScript's String(): 70.0 is "70")."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
