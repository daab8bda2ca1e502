"""The web dashboard: static pages served by the master at ``/`` (no build step, no CDN).

Everything the browser loads comes from this master: the page, its ES modules and stylesheet
(``static/``), and Plotly's JavaScript, read from the installed ``plotly`` Python package. A
Content-Security-Policy on the page forbids loading or connecting anywhere else, so the dashboard
works with no internet and a page can never leak a token to another origin.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Plotly injects <style> elements and sets inline styles, hence 'unsafe-inline' for styles only.
# Scripts, fetches and images are this origin's (data:/blob: for Plotly's PNG export and the
# download of a run's zip).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


def plotly_js() -> Path:
    """``plotly.min.js`` from the installed plotly package (a dependency of mlbench)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


class _Assets(StaticFiles):
    """The dashboard's own files: always revalidated (cheap 304s), so an upgraded master is
    never paired with a stale module from the browser's cache."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class _Plotly:
    """plotly.min.js (~4.8 MB; ~1.4 MB gzipped, compressed once on first request)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: bytes | None = None
        self.gz: bytes | None = None
        self.etag = ""

    def load(self) -> None:
        with self.lock:
            if self.raw is None:
                raw = plotly_js().read_bytes()
                self.etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
                self.gz = gzip.compress(raw, compresslevel=6, mtime=0)
                self.raw = raw

    def response(self, request: Request) -> Response:
        self.load()
        headers = {
            "ETag": self.etag,
            "Cache-Control": "no-cache",
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if request.headers.get("if-none-match") == self.etag:
            return Response(status_code=304, headers=headers)
        media = "text/javascript; charset=utf-8"
        if "gzip" in request.headers.get("accept-encoding", "") and self.gz is not None:
            headers["Content-Encoding"] = "gzip"
            return Response(self.gz, media_type=media, headers=headers)
        assert self.raw is not None
        return Response(self.raw, media_type=media, headers=headers)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard at ``/`` and its assets under ``/static`` (call after the API routes,
    so the dashboard never shadows ``/api``)."""
    plotly = _Plotly()
    page_headers = {
        "Content-Security-Policy": CSP,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=page_headers)

    @app.api_route("/static/plotly.min.js", methods=["GET", "HEAD"], include_in_schema=False)
    def plotly_route(request: Request) -> Response:
        return plotly.response(request)

    # after the plotly route, which therefore wins for its one path
    app.mount("/static", _Assets(directory=STATIC), name="dashboard-static")
