"""Two node agents uploading to a real master: each sends only its own rank's events (token
from a file), and together the master holds exactly the run's event files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlbench.launch.local import free_port
from mlbench.launch.session import LaunchRequest, LaunchSession

from ..e2e.helpers import cli_env
from .master import Master
from .test_upload import _expected, _new_run


def test_each_agent_uploads_its_own_ranks(master: Master, real_data: Path, tmp_path: Path) -> None:
    run_id = _new_run(master)
    session = LaunchSession(
        LaunchRequest(
            task="epsilon-logreg",
            workers=2,
            overrides=[
                f"data.dir={real_data}",
                "data.dataset=a9a",
                "train.max_steps=60",
                "train.log_every_steps=1",
                "train.log_every_seconds=0",
            ],
            threads_per_worker=1,
            runs_dir=tmp_path / "runs",
            run_id=run_id,
        )
    )
    session.preflight()
    run_dir = session.prepare()
    token_file = tmp_path / "upload-token"
    token_file.write_text(master.token + "\n")
    port = str(free_port())
    agents = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "mlbench.cli.main", "node", "--nnodes", "2"),
                *("--node-rank", str(n), "--master-addr", "localhost", "--master-port", port),
                *("--run-dir", str(run_dir), "--threads-per-worker", "1"),
                *("--upload", master.url, "--upload-token-file", str(token_file)),
            ],
            env=cli_env(tmp_path),  # no MLBENCH_UPLOAD_TOKEN: the file is the only source
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (0, 1)
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=180)
        assert agent.returncode == 0, err
        assert master.token not in " ".join(agent.args)
    nodes = [json.loads((run_dir / f"node-{n}.json").read_text()) for n in (0, 1)]
    assert all(n["upload"]["complete"] for n in nodes), nodes
    expected = _expected(run_dir, 2)
    assert [n["upload"]["uploaded"] for n in nodes] == [
        sum(1 for row in expected if row[0] == rank) for rank in (0, 1)
    ]
    assert master.stored(run_id) == expected
