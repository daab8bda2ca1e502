"""mlbench.train.timer: phase accounting of the training loop."""

from __future__ import annotations

import time

import pytest

from mlbench.train.timer import PHASES, STEP_PHASES, PhaseTimer

# Sleeps are short and tolerances generous: the suite runs on small, noisy CI machines. A sleep
# never returns early, so lower bounds are tight; upper bounds allow for scheduling delays.
SLACK = 0.25


def test_fresh_timer_is_zero():
    t = PhaseTimer()
    assert t.totals == dict.fromkeys(PHASES, 0.0)
    assert t.window == dict.fromkeys(PHASES, 0.0)
    assert t.train_time == 0.0
    assert set(STEP_PHASES) < set(PHASES)
    assert "eval" not in STEP_PHASES and "checkpoint" not in STEP_PHASES


def test_phases_accumulate():
    t = PhaseTimer()
    with t.phase("forward"):
        time.sleep(0.02)
    with t.phase("forward"):
        time.sleep(0.03)
    with t.phase("data"):
        time.sleep(0.01)
    assert 0.05 <= t.totals["forward"] < 0.05 + SLACK
    assert 0.01 <= t.totals["data"] < 0.01 + SLACK
    assert t.totals["backward"] == 0.0
    assert t.window["forward"] == t.totals["forward"]


def test_take_window_returns_and_resets_window_only():
    t = PhaseTimer()
    t.step_start()
    with t.phase("backward"):
        time.sleep(0.02)
    t.step_end()
    window, step_time = t.take_window()
    assert 0.02 <= window["backward"] < 0.02 + SLACK
    assert step_time >= window["backward"]
    assert t.window == dict.fromkeys(PHASES, 0.0)
    assert t.window_step_time == 0.0
    # totals and train time survive
    assert t.totals["backward"] == window["backward"]
    assert t.train_time == step_time
    # the next window holds only what happened since
    with t.phase("backward"):
        time.sleep(0.01)
    window2, step_time2 = t.take_window()
    assert 0.01 <= window2["backward"] < 0.01 + SLACK
    assert step_time2 == 0.0
    assert t.totals["backward"] == pytest.approx(window["backward"] + window2["backward"])


def test_step_phases_sum_to_step_time():
    t = PhaseTimer()
    durations = {
        "data": 0.01,
        "forward": 0.02,
        "backward": 0.03,
        "communication": 0.01,
        "optimizer": 0.01,
    }
    steps = []
    for _ in range(2):
        t.step_start()
        for name, d in durations.items():
            with t.phase(name):
                time.sleep(d)
        steps.append(t.step_end())
    window, step_time = t.take_window()
    phase_sum = sum(window[n] for n in STEP_PHASES)
    assert step_time == pytest.approx(sum(steps))
    assert t.train_time == pytest.approx(sum(steps))
    assert 2 * sum(durations.values()) <= phase_sum <= step_time
    # the only unattributed time is the bookkeeping between phases
    assert step_time - phase_sum < 0.05
    for name, d in durations.items():
        assert window[name] >= 2 * d


def test_eval_outside_step_is_not_train_time():
    t = PhaseTimer()
    t.step_start()
    with t.phase("forward"):
        time.sleep(0.01)
    t.step_end()
    with t.phase("eval"):
        time.sleep(0.05)
    assert t.totals["eval"] >= 0.05
    assert t.train_time < 0.05  # the 50 ms of eval is not in it
    _, step_time = t.take_window()
    assert step_time == t.train_time


def test_phase_time_recorded_when_body_raises():
    t = PhaseTimer()
    with pytest.raises(RuntimeError), t.phase("optimizer"):
        time.sleep(0.01)
        raise RuntimeError("boom")
    assert t.totals["optimizer"] >= 0.01


def test_unknown_phase_and_unpaired_step_end():
    t = PhaseTimer()
    with pytest.raises(KeyError), t.phase("compute"):
        pass
    with pytest.raises(AssertionError):
        t.step_end()


def test_step_end_returns_elapsed():
    t = PhaseTimer()
    t.step_start()
    time.sleep(0.02)
    elapsed = t.step_end()
    assert 0.02 <= elapsed < 0.02 + SLACK
    with pytest.raises(AssertionError):  # a step cannot end twice
        t.step_end()


def test_sync_called_at_every_boundary():
    calls = []
    t = PhaseTimer(sync=lambda: calls.append(time.perf_counter()))
    t.step_start()
    assert len(calls) == 1
    with t.phase("data"):
        assert len(calls) == 2
    assert len(calls) == 3
    with t.phase("forward"):
        pass
    assert len(calls) == 5
    t.step_end()
    assert len(calls) == 6


class _FakeDevice:
    """Work queued asynchronously; ``sync`` blocks until it is done (like cuda.synchronize)."""

    def __init__(self) -> None:
        self.pending = 0.0

    def launch(self, seconds: float) -> None:
        self.pending += seconds

    def sync(self) -> None:
        if self.pending:
            time.sleep(self.pending)
            self.pending = 0.0


def test_async_work_is_charged_to_the_phase_that_queued_it():
    dev = _FakeDevice()
    t = PhaseTimer(sync=dev.sync)
    t.step_start()
    with t.phase("forward"):
        dev.launch(0.05)  # returns immediately, like a CUDA kernel launch
    with t.phase("optimizer"):
        pass  # would block on the forward's work without the boundary sync
    elapsed = t.step_end()
    assert t.totals["forward"] >= 0.05
    assert t.totals["optimizer"] < 0.03
    assert elapsed >= 0.05


def test_without_sync_async_work_would_be_misattributed():
    # control for the test above: a timer without sync charges the forward's work elsewhere
    dev = _FakeDevice()
    t = PhaseTimer()
    with t.phase("forward"):
        dev.launch(0.05)
    with t.phase("optimizer"):
        dev.sync()
    assert t.totals["forward"] < 0.03
    assert t.totals["optimizer"] >= 0.05


def test_move_reattributes_without_changing_step_time() -> None:
    from mlbench.train.timer import PhaseTimer

    timer = PhaseTimer()
    timer.step_start()
    with timer.phase("backward"):
        time.sleep(0.02)
    step = timer.step_end()
    timer.move("backward", "communication", 0.005)
    assert timer.totals["communication"] == pytest.approx(0.005)
    assert timer.totals["backward"] + timer.totals["communication"] == pytest.approx(
        timer.window["backward"] + timer.window["communication"]
    )
    assert timer.train_time == step  # the step's wall time is unchanged
    timer.move("backward", "communication", 10.0)  # never more than the phase measured
    assert timer.totals["backward"] == pytest.approx(0.0, abs=1e-12)


def test_laps_charge_contiguous_spans_that_add_up_to_the_step():
    t = PhaseTimer()
    t.step_start()
    time.sleep(0.01)
    t.lap("data")
    time.sleep(0.03)
    t.lap("forward")
    t.lap("backward")  # an empty span
    time.sleep(0.02)
    t.lap("communication")
    step = t.step_end()
    assert 0.01 <= t.totals["data"] < 0.01 + SLACK
    assert 0.03 <= t.totals["forward"] < 0.03 + SLACK
    assert 0.02 <= t.totals["communication"] < 0.02 + SLACK
    assert t.totals["backward"] < 0.005
    laps = sum(t.window[n] for n in STEP_PHASES)
    assert laps <= step and step - laps < 0.005  # only the tail after the last lap
    # a new step starts a new lap: the time between steps is charged to nothing
    time.sleep(0.02)
    t.step_start()
    t.lap("data")
    t.step_end()
    assert t.totals["data"] < 0.01 + SLACK and t.window["data"] == t.totals["data"]
    assert t.totals["data"] - 0.01 < 0.015


def test_a_lap_syncs_so_async_work_is_charged_to_its_phase():
    dev = _FakeDevice()
    t = PhaseTimer(sync=dev.sync)
    t.step_start()
    dev.launch(0.05)
    t.lap("forward")
    t.lap("optimizer")
    t.step_end()
    assert t.totals["forward"] >= 0.05
    assert t.totals["optimizer"] < 0.03
