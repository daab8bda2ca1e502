"""The ``--fault`` grammar, its checks, the straggler injector's timing, the master-down transport,
the straggler ratio, and the hang watchdog on hand-written heartbeats."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mlbench.errors import ConfigError
from mlbench.faults import GRAMMAR, Fault, check_faults, faults_from_launch, parse_fault
from mlbench.launch.node import check_restarts
from mlbench.launch.outage import OutageTransport
from mlbench.launch.watchdog import Watchdog
from mlbench.results.summary import STRAGGLER_RATIO, stragglers
from mlbench.telemetry.heartbeat import Heartbeat, classify, read_heartbeat
from mlbench.train.faults import FaultInjector, injector_for
from mlbench.train.timer import PhaseTimer


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("kill:rank=1,step=30", Fault("kill", rank=1, step=30)),
        ("kill:rank=0,after=5s", Fault("kill", rank=0, after=5.0)),
        ("kill: rank=2 , after=500ms", Fault("kill", rank=2, after=0.5)),
        ("hang:rank=0,step=20", Fault("hang", rank=0, step=20)),
        ("slow:rank=1,factor=3", Fault("slow", rank=1, factor=3.0)),
        ("master-down:after=5s,for=10s", Fault("master-down", after=5.0, duration=10.0)),
        ("master-down:for=1m,after=2", Fault("master-down", after=2.0, duration=60.0)),
    ],
)
def test_the_grammar_parses_and_the_spec_round_trips(text: str, fault: Fault) -> None:
    parsed = parse_fault(text)
    assert parsed == fault
    assert parse_fault(parsed.spec) == parsed
    assert faults_from_launch({"faults": [parsed.to_dict()]}) == [parsed]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("explode:rank=1", "unknown fault 'explode'"),
        ("kill", "kill needs options"),
        ("kill:rank=1", "kill takes rank,step or after,rank"),
        ("kill:rank=1,step=3,after=2s", "kill takes"),
        ("kill:rank=-1,step=3", "rank must be at least 0"),
        ("kill:rank=1,step=0", "step must be at least 1"),
        ("kill:rank=x,step=3", "rank='x' is not an integer"),
        ("kill:rank=1,after=soon", "after='soon' is not a duration"),
        ("hang:rank=1,step=3,step=4", "step is given twice"),
        ("slow:rank=1,factor=1", "factor must be above 1"),
        ("slow:rank=1,factor=fast", "is not a number"),
        ("slow:rank=1 factor=3", "slow takes factor,rank, got rank"),
        ("master-down:after=1s,for=0s", "for must be longer than 0 s"),
    ],
)
def test_a_bad_spec_is_one_line_that_quotes_the_grammar(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fault(text)
    message = str(err.value)
    assert needle in message and GRAMMAR in message and "\n" not in message


def test_faults_are_checked_against_the_run() -> None:
    kill = parse_fault("kill:rank=1,step=3")
    check_faults([kill], 2, upload=False, engine="local")
    with pytest.raises(ConfigError, match="rank 1 does not exist in a run of 1 worker"):
        check_faults([kill], 1, upload=False, engine="local")
    down = parse_fault("master-down:after=1s,for=2s")
    with pytest.raises(ConfigError, match="needs --upload"):
        check_faults([down], 2, upload=False, engine="local")
    check_faults([down, kill], 2, upload=True, engine="local")
    with pytest.raises(ConfigError, match="local engine only"):
        check_faults([kill], 2, upload=False, engine="slurm")
    with pytest.raises(ConfigError, match="collides with --fault kill:rank=1,step=3"):
        check_faults([kill, parse_fault("hang:rank=1,step=9")], 2, upload=False, engine="local")
    check_faults([kill, parse_fault("hang:rank=0,step=9")], 2, upload=False, engine="local")


def test_restarts_are_the_local_engines() -> None:
    check_restarts(3, 1)
    with pytest.raises(ConfigError, match="at least 0"):
        check_restarts(-1, 1)
    with pytest.raises(ConfigError, match="local engine only"):
        check_restarts(1, 2)
    check_restarts(0, 4)  # fail fast is every engine's


def test_a_fault_acts_in_the_first_attempt_only(tmp_path: Path) -> None:
    from mlbench.attempts import record_restart

    faults = [parse_fault("kill:rank=1,step=3"), parse_fault("slow:rank=0,factor=2")]
    assert injector_for(faults, 2, tmp_path) is None  # no fault names rank 2
    injector = injector_for(faults, 1, tmp_path)
    assert injector is not None and injector.faults == [faults[0]]
    record_restart(tmp_path, "rank 1 was killed", time.time(), by="engine")
    assert injector_for(faults, 1, tmp_path) is None


def test_a_straggler_takes_factor_times_its_compute_charged_to_compute_phases() -> None:
    timer = PhaseTimer()
    injector = FaultInjector([parse_fault("slow:rank=0,factor=3")])
    own = 0.0  # the forward time the steps themselves took
    for step in range(1, 4):
        start = timer.totals["forward"]
        timer.step_start()
        time.sleep(0.01)
        timer.lap("forward")
        time.sleep(0.001)
        timer.lap("communication")
        timer.step_end()
        own += timer.totals["forward"] - start
        injector(step, timer)
    totals = timer.totals
    # each step's own forward came back twice more, injected; communication is untouched
    # a loaded machine may oversleep the last step (earlier ones are paid back at the next)
    assert 3 * own * 0.97 <= totals["forward"] <= 3 * own + 0.05
    assert totals["communication"] < own
    assert timer.train_time == pytest.approx(totals["forward"] + totals["communication"], 0.05)


def test_master_down_refuses_only_inside_its_window() -> None:
    now = [100.0]
    served = []

    def handler(request: httpx.Request) -> httpx.Response:
        served.append(request.url.path)
        return httpx.Response(200)

    transport = OutageTransport(5.0, 10.0, inner=httpx.MockTransport(handler), clock=lambda: now[0])
    client = httpx.Client(transport=transport)
    assert client.get("http://m/a").status_code == 200
    now[0] = 105.0
    with pytest.raises(httpx.ConnectError, match="master down"):
        client.get("http://m/b")
    now[0] = 114.9
    with pytest.raises(httpx.ConnectError):
        client.get("http://m/c")
    now[0] = 115.0
    assert client.get("http://m/d").status_code == 200
    assert served == ["/a", "/d"] and transport.refused == 2


def _rank(rank: int, steps: int, compute: float, comm: float) -> dict:
    phases = {"data": compute / 4, "forward": compute / 4, "backward": compute / 4}
    phases |= {"optimizer": compute / 4, "communication": comm, "eval": 5.0}
    return {"rank": rank, "steps": steps, "phases": phases}


def test_the_straggler_is_the_rank_that_computes_longest_not_the_one_that_waits() -> None:
    # a synchronous run: every rank's step lasts the same; rank 2 computes 3×, the others wait
    ranks = [_rank(0, 100, 1.0, 2.0), _rank(1, 100, 1.1, 1.9), _rank(2, 100, 3.0, 0.1)]
    st = stragglers(ranks)
    assert st is not None
    assert st["slowest_rank"] == 2 and st["flagged"] and st["threshold"] == STRAGGLER_RATIO
    assert st["ratio"] == pytest.approx(3.0 / 1.1)
    even = stragglers([_rank(0, 100, 1.0, 1.0), _rank(1, 100, 1.2, 0.8)])
    assert even is not None and not even["flagged"] and even["ratio"] == pytest.approx(1.2)
    # two ranks: the lower median, so the ratio is slow ÷ fast (3, not 1.5)
    two = stragglers([_rank(0, 10, 1.0, 2.0), _rank(1, 10, 3.0, 0.0)])
    assert two is not None and two["ratio"] == pytest.approx(3.0)
    assert stragglers([_rank(0, 10, 1.0, 1.0)]) is None


def _beat(run_dir: Path, rank: int, **fields: object) -> None:
    beat = {"rank": rank, "pid": 1000 + rank, "time": time.time(), "step": 20}
    beat |= {"phase": "train", "where": "", "stalled_for": 0.0} | fields
    (run_dir / f"rank-{rank}.heartbeat").write_text(json.dumps(beat))


def test_the_watchdog_names_the_rank_stuck_outside_a_collective(tmp_path: Path) -> None:
    dog = Watchdog(tmp_path, 10.0)
    _beat(
        tmp_path, 0, phase="fault", where="hang_forever (mlbench/train/faults.py:44)", stalled_for=4
    )
    _beat(tmp_path, 1, phase="collective", where="all_reduce (torch/...)", stalled_for=4)
    assert dog.check([0, 1], [1000, 1001]) is None  # 4 s: within the timeout
    _beat(
        tmp_path,
        0,
        phase="fault",
        where="hang_forever (mlbench/train/faults.py:44)",
        stalled_for=11,
    )
    _beat(tmp_path, 1, phase="collective", where="all_reduce (torch/...)", stalled_for=11)
    dog._next = 0.0
    reason = dog.check([0, 1], [1000, 1001])
    assert reason is not None
    assert "train.hang_timeout=10" in reason
    assert "rank 0 stalled at step 20 outside any collective" in reason and "hang_forever" in reason
    assert "waiting in a collective: rank 1 at step 20" in reason
    dog._next = 0.0
    assert dog.check([0, 1], [1000, None]) is not None  # rank 0 alone is enough
    dog._next = 0.0
    assert dog.check([0, 1], [999, 998]) is None  # beats of another attempt's processes


def test_a_heartbeat_that_stops_beating_is_a_stall(tmp_path: Path) -> None:
    dog = Watchdog(tmp_path, 5.0)
    _beat(tmp_path, 0, time=time.time() - 60, stalled_for=0.0)  # frozen with the GIL held
    reason = dog.check([0], [1000])
    assert reason is not None and "no training progress for 60 s" in reason
    dog._next = 0.0
    _beat(tmp_path, 0, time=time.time() - 60, phase="done")
    assert dog.check([0], [1000]) is None


def test_a_heartbeat_reads_progress_and_where_the_main_thread_is(tmp_path: Path) -> None:
    """A real Heartbeat watching a thread parked in the hang fault's function: phase "fault",
    the stall clock running while the step does not move, reset when it moves."""
    from mlbench.train import faults as train_faults

    step = [7]
    parked = threading.Event()
    ident: list[int] = []

    def park() -> None:
        ident.append(threading.get_ident())
        parked.set()
        train_faults.hang_forever(parse_fault("hang:rank=0,step=7"), 7)

    threading.Thread(target=park, daemon=True).start()
    parked.wait(5)
    time.sleep(0.05)
    beat = Heartbeat(tmp_path, 0, lambda: (step[0], 0.0), 0.05)
    beat._main = ident[0]  # watch the parked thread as if it were the main one
    beat.start()

    def until(ok: Callable[[dict], bool]) -> dict:  # a loaded machine delays the beats
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seen = read_heartbeat(tmp_path, 0)
            if seen is not None and ok(seen):
                return seen
            time.sleep(0.02)
        raise AssertionError(read_heartbeat(tmp_path, 0))

    seen = until(lambda b: b["stalled_for"] >= 0.3)  # the clock runs while the step stands
    assert seen["phase"] == "fault" and seen["pid"] == os.getpid() and seen["step"] == 7
    assert "hang_forever" in seen["where"]
    moved = time.time()
    step[0] = 8
    seen = until(lambda b: b["step"] == 8)
    assert seen["stalled_for"] <= time.time() - moved  # reset when the step moved
    beat.stop()
    seen = read_heartbeat(tmp_path, 0)
    assert seen is not None and seen["phase"] == "done"


def test_classify_reads_the_loops_phases() -> None:
    import sys

    def _evaluate() -> tuple[str, str]:
        return classify(sys._getframe(), 5)

    def _train_step() -> tuple[str, str]:
        return classify(sys._getframe(), 0)

    assert _evaluate()[0] == "eval"

    class _Work:
        def wait(self) -> tuple[str, str]:
            return classify(sys._getframe(1), 5)

    def reduce_gradients(work: _Work) -> tuple[str, str]:
        return work.wait()  # as a scheme blocks on an async all-reduce's handle

    assert reduce_gradients(_Work())[0] == "collective"
    assert _train_step()[0] == "train"
    assert classify(sys._getframe(), 0)[0] == "setup"  # no step yet, not in a step
    assert classify(sys._getframe(), 3)[0] == "train"


def test_a_ctrl_c_while_ranks_are_forked_is_held_until_they_all_started() -> None:
    """A Ctrl-C that lands in Python's at-fork hooks is dropped (the restart Ctrl-C test once
    lost one that way): the agent holds SIGINT/SIGTERM while it spawns — whichever thread the
    kernel hands the signal to — and acts on it after, with the handler that was there."""
    import signal
    import subprocess

    from mlbench.launch.node import _stop_signals_held

    # Python's own Ctrl-C handler, whatever this process inherited (a shell starting it in the
    # background has SIGINT ignored, and Python then leaves it ignored)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    other = threading.Thread(target=time.sleep, args=(1.0,), daemon=True)
    other.start()  # a second thread the signal may be delivered to (the uploader's, in a run)
    reached = False
    child = None
    with pytest.raises(KeyboardInterrupt), _stop_signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # not raised here: held
        child = subprocess.Popen(["sleep", "30"])
        reached = True
    assert reached and child is not None
    child.kill()
    child.wait()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    with _stop_signals_held():  # nothing caught: nothing raised
        pass
    signal.signal(signal.SIGINT, inherited)
