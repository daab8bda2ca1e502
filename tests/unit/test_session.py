"""launch.session: what preflight refuses (oversubscribed cores, bad LIBSVM content) and how
prepare reports a run directory it cannot write — all before any worker exists."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from mlbench import runs
from mlbench.errors import ConfigError, DataError, RunDirError
from mlbench.launch import session
from mlbench.launch.session import LaunchRequest, LaunchSession, check_cores

from ..support.libsvm_files import write_a9a


def _request(tmp_path: Path, **kw) -> LaunchRequest:
    if not (tmp_path / "data").exists():
        write_a9a(tmp_path / "data")  # 400 rows: 3 workers still get a full batch of 100
    overrides = ["data.dataset=a9a", f"data.dir={tmp_path / 'data'}", "data.download=false"]
    return LaunchRequest(task="epsilon-logreg", overrides=overrides, **kw)


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "cpu_cores", lambda: 2)


# ---------------------------------------------------------------------------- cores


@pytest.mark.parametrize(
    ("workers", "threads", "cores"), [(1, 1, 1), (2, 1, 2), (2, 2, 4), (1, 8, 8), (8, 1, 8)]
)
def test_check_cores_allows_up_to_one_thread_per_core(workers, threads, cores):
    assert check_cores(workers, threads, cores, allow=False) is None


def test_check_cores_refusal_names_the_cores_and_the_flag():
    with pytest.raises(ConfigError) as exc:
        check_cores(64, 1, 2, allow=False)
    msg = str(exc.value)
    assert "64 workers × 1 thread = 64 threads" in msg and "2 CPU cores" in msg
    assert "--oversubscribe" in msg and "\n" not in msg


def test_check_cores_with_the_flag_is_a_warning():
    warning = check_cores(3, 2, 2, allow=True)
    assert warning is not None and warning.startswith("warning: ")
    assert "3 workers × 2 threads = 6 threads" in warning and "2 CPU cores" in warning


def test_check_cores_counts_the_loader_threads():
    """1b's decoding processes take cores beside each rank's threads: 2 ranks × (1 + 2) on 4
    cores oversubscribe although 2 × 1 would fit."""
    assert check_cores(2, 1, 4, allow=False) is None
    assert check_cores(1, 2, 4, allow=False, loader=2) is None
    with pytest.raises(ConfigError) as exc:
        check_cores(2, 1, 4, allow=False, loader=2)
    assert "2 workers × (1 thread + 2 loader) = 6 threads on 4 CPU cores" in str(exc.value)


def test_two_workers_on_two_cores_pass_preflight(tmp_path, two_cores):
    s = LaunchSession(_request(tmp_path, workers=2))
    s.preflight()
    assert s.threads == 1 and s.warnings == []


@pytest.mark.parametrize(("workers", "threads"), [(3, None), (1, 3), (2, 2)])
def test_preflight_refuses_more_threads_than_cores(tmp_path, two_cores, workers, threads):
    s = LaunchSession(_request(tmp_path, workers=workers, threads_per_worker=threads))
    with pytest.raises(ConfigError, match=r"on 2 CPU cores.*--oversubscribe"):
        s.preflight()


def test_preflight_oversubscribes_when_asked(tmp_path, two_cores):
    s = LaunchSession(_request(tmp_path, workers=3, oversubscribe=True))
    s.preflight()
    assert len(s.warnings) == 1 and "3 workers × 1 thread = 3 threads" in s.warnings[0]


# ---------------------------------------------------------------------------- data


def test_preflight_refuses_a_bad_libsvm_line(tmp_path):
    train, _ = write_a9a(tmp_path / "data", replace={7: "+1 3:1 11:\n"})
    with pytest.raises(DataError, match=re.escape(f"LIBSVM file {train}, line 7: ")):
        LaunchSession(_request(tmp_path)).preflight()


# ---------------------------------------------------------------------------- run directory


def test_runs_dir_under_a_file_is_a_run_dir_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory\n")
    s = LaunchSession(_request(tmp_path, runs_dir=blocker / "runs"))
    s.preflight()
    with pytest.raises(RunDirError) as exc:
        s.prepare()
    msg = str(exc.value)
    assert str(blocker / "runs") in msg and "Not a directory" in msg and "\n" not in msg
    assert s.run_dir is None


def test_permission_denied_is_a_run_dir_error(tmp_path, monkeypatch):
    """As root, chmod does not stop writes: the refusal is simulated where the OS would raise."""

    def refuse(runs_dir: Path, task: str, run_id: str | None = None) -> Path:
        raise PermissionError(errno.EACCES, "Permission denied", str(runs_dir))

    monkeypatch.setattr(runs, "create_run_dir", refuse)
    s = LaunchSession(_request(tmp_path, runs_dir=tmp_path / "runs"))
    s.preflight()
    with pytest.raises(
        RunDirError, match=re.escape(str(tmp_path / "runs")) + ".*Permission denied"
    ):
        s.prepare()


def test_a_failed_write_leaves_no_half_made_run_dir(tmp_path, monkeypatch):
    def full(run_dir: Path, cfg: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "config.json"))

    monkeypatch.setattr(runs, "write_config", full)
    s = LaunchSession(_request(tmp_path, runs_dir=tmp_path / "runs"))
    s.preflight()
    with pytest.raises(RunDirError, match="No space left on device"):
        s.prepare()
    assert list((tmp_path / "runs").iterdir()) == []
