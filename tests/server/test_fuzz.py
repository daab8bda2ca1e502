"""Fuzzing the served OpenAPI schema (schemathesis): nothing a client sends causes a 5xx, and
every response — status code, content type, body — is one the schema declares.

Every operation gets generated requests, both valid by the schema (positive) and invalid
(negative), with an admin token so they reach the handlers rather than stopping at 401. It runs
on both databases: PostgreSQL refuses things SQLite accepts (NUL bytes in text, integers past
64 bits in OFFSET), which is exactly where a 500 hides. Bounded: a fixed number of examples per
operation and mode, with a fixed seed so a failure reproduces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from mlbench.server.app import create_app
from mlbench.server.auth import create_token
from mlbench.server.models import Event, Run

EXAMPLES = 25


def _served_schema() -> dict:
    """The schema the master serves (it does not depend on the database's contents)."""
    engine = create_engine("sqlite://")
    try:
        return create_app(engine).openapi()
    finally:
        engine.dispose()


schema = schemathesis.openapi.from_dict(_served_schema())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], allow_x00=True
)


SEEDED = "seeded-run"


def _seed(engine: Engine, run_dir: Path) -> None:
    """A finished 2-rank run with events and logs, so a request naming it gets past the 404
    into the handler (a random run id never would). Re-made when a fuzzed DELETE removed it."""
    with Session(engine) as s:
        if s.get(Run, SEEDED) is not None:
            return
        s.add(
            Run(
                id=SEEDED,
                task="epsilon-logreg",
                state="finished",
                workers=2,
                backend="gloo",
                algorithm="allreduce",
                goal="full",
                overrides=[],
                official=True,
                executor_ref={"kind": "local", "run_id": SEEDED, "run_dir": str(run_dir)},
                result={"schema_version": 1, "state": "finished"},
            )
        )
        s.flush()  # the run row before its events (no ORM relationship orders them)
        for rank in (0, 1):
            for seq in range(20):
                s.add(
                    Event(
                        run_id=SEEDED,
                        rank=rank,
                        seq=seq,
                        time=0.1 * seq,
                        step=seq,
                        epoch=seq / 10,
                        kind="train",
                        name="loss",
                        value=1.0 / (seq + 1),
                    )
                )
        s.commit()
    run_dir.mkdir(exist_ok=True)
    for rank in (0, 1):
        (run_dir / f"rank-{rank}.stdout").write_text("step 1\nstep 2 é\n")


@pytest.fixture
def fuzz_target(engine: Engine, tmp_path: Path) -> tuple[FastAPI, str, Engine, Path]:
    app = create_app(engine, stream_interval=0.01)
    with Session(engine) as s:
        token = create_token(s, "fuzz")
        s.commit()
    return app, token, engine, tmp_path / "run"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_causes_a_server_error(
    case: schemathesis.Case, fuzz_target: tuple[FastAPI, str, Engine, Path]
) -> None:
    app, token, engine, run_dir = fuzz_target
    _seed(engine, run_dir)
    params = case.path_parameters or {}
    # half the cases aim at an existing run (decided by the generated id, so it reproduces)
    if "run_id" in params and hash(str(params["run_id"])) % 2 == 0:
        params["run_id"] = SEEDED
    # not only "no 5xx": every status, content type and body is the one the schema declares
    case.call_and_validate(
        app=app,
        headers={"Authorization": f"Bearer {token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
