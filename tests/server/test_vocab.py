"""The vocabularies the master serves (``/api/vocab``, the dashboard's ``vocab.js``) are the Python
enums, the dashboard does not re-declare them, and the main reads have response models."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from mlbench.server.app import create_app
from mlbench.server.dashboard import STATIC
from mlbench.server.states import TERMINAL_STATES, TRANSITIONS, RunState
from mlbench.vocab import PHASES, STEP_PHASES, Backend, EventKind, Goal, StopReason


@pytest.fixture
def anon(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine)) as c:  # no token: reads are closed
        yield c


def test_api_vocab_is_the_python_enums(anon: TestClient) -> None:
    resp = anon.get("/api/vocab")
    assert resp.status_code == 200  # open: the program's words, nobody's data
    assert resp.json() == {
        "run_states": [s.value for s in RunState],
        "terminal_states": [s.value for s in RunState if s in TERMINAL_STATES],
        "transitions": {
            s.value: [t.value for t in RunState if t in targets]
            for s, targets in TRANSITIONS.items()
        },
        "phases": [p.value for p in PHASES],
        "step_phases": [p.value for p in STEP_PHASES],
        "event_kinds": [k.value for k in EventKind],
        "stop_reasons": [r.value for r in StopReason],
        "goals": [g.value for g in Goal],
        "backends": [b.value for b in Backend],
    }


def test_vocab_js_serves_the_same(anon: TestClient) -> None:
    resp = anon.get("/static/js/vocab.js")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/javascript")
    match = re.search(r"export const VOCAB = Object\.freeze\((.*)\);\n", resp.text)
    assert match and json.loads(match.group(1)) == anon.get("/api/vocab").json()
    for enum in (RunState, EventKind, StopReason, Goal, Backend):
        line = f"export const {enum.__name__} = Object.freeze("
        assert line + json.dumps({m.name: m.value for m in enum}) + ");" in resp.text
    again = anon.get("/static/js/vocab.js", headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304


def _static_js() -> list[Path]:
    return sorted((STATIC / "js").rglob("*.js"))


@pytest.mark.parametrize(
    "words",
    [
        [s.value for s in RunState],
        [s.value for s in RunState if s in TERMINAL_STATES],
        [p.value for p in PHASES],
        [p.value for p in STEP_PHASES],
        [k.value for k in EventKind],
        [b.value for b in Backend],
    ],
    ids=["run_states", "terminal", "phases", "step_phases", "kinds", "backends"],
)
def test_dashboard_does_not_redeclare_a_vocabulary(words: list[str]) -> None:
    """A list literal starting with a vocabulary's first two words is a re-declaration."""
    head = re.compile(r'\[\s*"' + re.escape(words[0]) + r'",\s*"' + re.escape(words[1]) + '"')
    offenders = [p.name for p in _static_js() if head.search(p.read_text())]
    assert offenders == []
    assert (STATIC / "js" / "vocab.js").exists() is False  # served, never a stale copy on disk


def test_main_reads_have_response_models(anon: TestClient) -> None:
    schema = anon.get("/openapi.json").json()
    expected = {
        ("/api/health", "get"): "HealthOut",
        ("/api/settings", "get"): "SettingsOut",
        ("/api/vocab", "get"): "VocabOut",
        ("/api/runs", "get"): "RunsOut",
        ("/api/runs", "post"): "RunsOut",
        ("/api/runs/import", "post"): "RunOut",
        ("/api/runs/{run_id}", "get"): "RunOut",
        ("/api/runs/{run_id}/cancel", "post"): "RunOut",
        ("/api/runs/{run_id}/logs", "get"): "LogsOut",
        ("/api/runs/{run_id}/events", "post"): "IngestOut",
        ("/api/runs/{run_id}/metrics", "get"): "MetricsOut",
        ("/api/runs/{run_id}/phases", "get"): "PhasesOut",
        ("/api/runs/{run_id}/series", "get"): "SeriesOut",
    }
    for (path, method), model in expected.items():
        responses = schema["paths"][path][method]["responses"]
        ok = responses.get("200") or responses["201"]
        ref = ok["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{model}", (path, method)
    run = schema["components"]["schemas"]["RunOut"]
    assert set(run["required"]) >= {"id", "state", "result", "has_logs"}
    states = schema["components"]["schemas"]["RunState"]["enum"]
    assert states == [s.value for s in RunState]
    zip_types = schema["paths"]["/api/runs/{run_id}/download"]["get"]["responses"]["200"]
    assert "application/zip" in zip_types["content"]
