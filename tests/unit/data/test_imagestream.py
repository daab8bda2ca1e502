"""The streaming image loader over a real ILSVRC-layout tree of photographs (with its grayscale,
CMYK and PNG-named-JPEG oddities): labels, decodes, determinism across worker counts, shards
over simulated ranks, errors from workers, and no worker left behind."""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mlbench.data import imagestream
from mlbench.data.crops import center_crop_box, decode_crop, image_size
from mlbench.data.imagestream import ImageStreamLoader, epoch_seed
from mlbench.data.loader import Loader
from mlbench.data.partition import shard_indices
from mlbench.errors import CheckpointError, DataError

REPO = Path(__file__).resolve().parents[3]


def _files(tree: Any, split: str = "train") -> tuple[list[str], list[int]]:
    rows = getattr(tree, split)
    return [str(tree.root / rel) for rel, _ in rows], [label for _, label in rows]


def _loader(tree: Any, **kw: Any) -> ImageStreamLoader:
    files, labels = _files(tree, kw.pop("split", "train"))
    args: dict[str, Any] = dict(
        batch_size=6, train=True, rank=0, world_size=1, seed=3, image_size=32, workers=0
    )
    args.update(kw)
    return ImageStreamLoader(files, labels, **args)


def _all(loader: ImageStreamLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    try:
        return list(loader)
    finally:
        loader.close()


def _children() -> set[int]:
    return {p.pid for p in mp.active_children() if p.pid is not None}


def test_val_order_labels_shapes_and_every_oddity_decodes(imagenet_tree: Any) -> None:
    tree = imagenet_tree
    loader = _loader(tree, train=False, workers=2, batch_size=7, image_size=40)
    assert isinstance(loader, Loader)
    batches = _all(loader)
    assert len(batches) == len(loader) == -(-len(tree.train) // 7)  # val keeps the last one
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.uint8 and x.shape == (len(tree.train), 3, 40, 40)
    assert y.dtype == torch.int64 and y.tolist() == [label for _, label in tree.train]
    rels = [rel for rel, _ in tree.train]
    for kind in ("gray", "cmyk", "png"):
        i = rels.index(tree.odd[kind])
        data = (tree.root / tree.odd[kind]).read_bytes()
        hw = image_size(data)
        expect = decode_crop(data, center_crop_box(*hw, 256, 40), hw, 40, False)
        assert torch.equal(x[i], torch.from_numpy(np.ascontiguousarray(expect))), kind
        assert x[i].float().std() > 5  # a picture, not a blank
    gray = x[rels.index(tree.odd["gray"])]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_same_batches_for_any_worker_count_and_seed_dependence(
    imagenet_tree: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [_all(_loader(imagenet_tree, workers=w)) for w in (0, 1, 2)]
    with monkeypatch.context() as m:  # no room in /dev/shm: the pixels cross the pipe
        m.setattr(imagestream, "_shm_room", lambda nbytes: False)
        piped = _loader(imagenet_tree, workers=2)
        it = iter(piped)
        first = next(it)
        assert piped._pool is not None and piped._pool.shms == [[], []]
        runs.append([first, *it])
        piped.close()
    assert len(runs[0]) == len(imagenet_tree.train) // 6  # train drops the short batch
    for other in runs[1:]:
        assert len(other) == len(runs[0])
        for (xa, ya), (xb, yb) in zip(runs[0], other, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    again = _all(_loader(imagenet_tree, workers=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(runs[0], again, strict=True))
    other_seed = _all(_loader(imagenet_tree, seed=4))
    assert not torch.equal(runs[0][0][1], other_seed[0][1]) or not torch.equal(
        runs[0][0][0], other_seed[0][0]
    )
    # the next epoch reshuffles and re-augments
    loader = _loader(imagenet_tree)
    loader.set_epoch(1)
    epoch1 = _all(loader)
    assert not torch.equal(runs[0][0][0], epoch1[0][0])


def test_train_shards_equal_disjoint_and_nearly_complete(imagenet_tree: Any) -> None:
    files, labels = _files(imagenet_tree)
    n = len(files)
    for world in (2, 3):
        for epoch in (0, 1):
            shards = []
            for rank in range(world):
                loader = _loader(imagenet_tree, rank=rank, world_size=world)
                loader.set_epoch(epoch)
                shard = loader.shard()
                assert len(shard) == loader.num_samples == n // world
                expect = shard_indices(n, rank, world, seed=epoch_seed(3, epoch), equal=True)
                assert set(shard.tolist()) == set(expect.tolist())
                shards.append(shard)
            flat = np.concatenate(shards)
            assert len(set(flat.tolist())) == len(flat)  # disjoint
            assert n - len(flat) < world
        assert (
            len(ImageStreamLoader(files, labels, 4, train=True, rank=0, world_size=world, seed=0))
            == (n // world) // 4
        )
    # what rank 1 of 2 yields is its shard's images, in its shard's order
    loader = _loader(imagenet_tree, rank=1, world_size=2, batch_size=5)
    order = loader.shard()
    got = torch.cat([y for _, y in _all(loader)])
    assert got.tolist() == [labels[i] for i in order[: len(got)]]


def test_val_shards_cover_every_image_once(imagenet_tree: Any) -> None:
    files, labels = _files(imagenet_tree, "val")
    for world in (2, 3):
        seen: list[int] = []
        for rank in range(world):
            loader = _loader(imagenet_tree, split="val", train=False, rank=rank, world_size=world)
            seen += loader.shard().tolist()
            if world == 2:
                ys = torch.cat([y for _, y in _all(loader)])
                assert ys.tolist() == [labels[i] for i in loader.shard()]
        assert sorted(seen) == list(range(len(files)))


def test_a_corrupt_file_is_a_one_line_data_error_in_the_rank(
    imagenet_tree: Any, tmp_path: Path
) -> None:
    files, labels = _files(imagenet_tree)
    files = [shutil.copy(f, tmp_path / f"{i}.JPEG") for i, f in enumerate(files[:8])]
    Path(files[6]).write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    loader = ImageStreamLoader(
        [str(f) for f in files],
        labels[:8],
        2,
        train=False,
        rank=0,
        world_size=1,
        seed=0,
        image_size=32,
        workers=2,
    )
    it = iter(loader)
    for _ in range(3):
        next(it)  # the good ones come through
    with pytest.raises(DataError) as err:
        next(it)
    assert "6.JPEG" in str(err.value) and "\n" not in str(err.value)
    # the pool survives a bad file: a new epoch runs again up to it
    assert len(list(zip(range(2), loader, strict=False))) == 2
    loader.close()
    assert _children() == set()
    Path(files[6]).unlink()  # a file gone since the manifest was written
    with pytest.raises(DataError, match=r"cannot read image .*6\.JPEG: No such file"):
        list(loader)
    loader.close()


def test_workers_ignore_ctrl_c(imagenet_tree: Any) -> None:
    """Ctrl-C reaches the whole process group; the rank handles it, the workers carry on (and
    end when the rank closes them or exits)."""
    loader = _loader(imagenet_tree, workers=2, batch_size=2)
    expect = _all(_loader(imagenet_tree, batch_size=2))
    it = iter(loader)
    first = next(it)
    for proc in loader._pool.procs:  # type: ignore[union-attr]
        os.kill(proc.pid, signal.SIGINT)
    rest = list(it)
    assert all(torch.equal(a[0], b[0]) for a, b in zip([first, *rest], expect, strict=True))
    assert len(rest) == len(expect) - 1
    loader.close()


def test_a_dead_worker_raises_instead_of_hanging(imagenet_tree: Any) -> None:
    loader = _loader(imagenet_tree, workers=2, batch_size=2)
    it = iter(loader)
    next(it)
    victim = loader._pool.procs[1]  # type: ignore[union-attr]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(5)
    with pytest.raises(DataError, match="worker 1 exited unexpectedly"):
        for _ in it:
            pass
    assert _children() == set()  # the broken pool was shut down
    assert len(_all(loader)) == len(loader)  # and the next iteration starts a new one


def test_close_and_garbage_collection_leave_no_workers(imagenet_tree: Any) -> None:
    assert _children() == set()
    loader = _loader(imagenet_tree, workers=2)
    it = iter(loader)
    next(it)  # stop mid-epoch, with batches in flight
    assert len(_children()) == 2
    segments = [Path("/dev/shm") / shm.name for w in loader._pool.shms for shm in w]  # type: ignore[union-attr]
    assert len(segments) == 4 and all(p.exists() for p in segments)  # 2 slots per worker
    loader.close()
    assert _children() == set()
    assert not any(p.exists() for p in segments)  # unlinked
    loader.close()  # idempotent

    def abandon() -> None:
        dropped = _loader(imagenet_tree, workers=2)
        next(iter(dropped))
        assert len(_children()) == 2

    abandon()
    gc.collect()
    assert _children() == set()


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_workers_end_with_their_rank(imagenet_tree: Any, how: str) -> None:
    """A rank that exits without close(), or is killed outright, leaves no worker behind."""
    files, labels = _files(imagenet_tree)
    script = textwrap.dedent(
        f"""
        import multiprocessing as mp, os, signal, sys
        from mlbench.data.imagestream import ImageStreamLoader
        if __name__ == "__main__":
            loader = ImageStreamLoader({files!r}, {labels!r}, 2, train=True, rank=0,
                                       world_size=1, seed=0, image_size=16, workers=2)
            next(iter(loader))
            print(" ".join(str(p.pid) for p in mp.active_children()
                           if p.name.startswith("mlbench-image")), flush=True)
            print(" ".join(s.name for w in loader._pool.shms for s in w), flush=True)
            if {how == "kill"!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stderr[-2000:]
    pids = [int(p) for p in lines[0].split()]
    segments = [Path("/dev/shm") / name for name in lines[1].split()]
    assert len(pids) == 2 and len(segments) == 4

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(")")[-1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (
        any(alive(p) for p in pids) or any(p.exists() for p in segments)
    ):
        time.sleep(0.1)
    assert not any(alive(p) for p in pids)
    # unlinked at exit, or by multiprocessing's resource tracker once a killed rank is gone
    assert not any(p.exists() for p in segments)


def test_skip_and_state_dict(imagenet_tree: Any) -> None:
    full = _all(_loader(imagenet_tree, workers=2, batch_size=4))
    loader = _loader(imagenet_tree, workers=2, batch_size=4)
    it = iter(loader)
    next(it)
    assert it.skip(2) == 2  # type: ignore[attr-defined]
    assert torch.equal(next(it)[0], full[3][0])
    assert it.skip(100) == len(full) - 4  # type: ignore[attr-defined]
    assert next(it, None) is None
    loader.set_epoch(5)
    state = loader.state_dict()
    loader.close()
    fresh = _loader(imagenet_tree, batch_size=4)
    fresh.load_state_dict(state)
    assert fresh.epoch == 5


def test_device_mode_hands_bytes_boxes_and_flips_to_the_device_decoder(
    imagenet_tree: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a stand-in ``decode_batch`` that decodes on the CPU, device mode gives exactly the
    CPU mode's batches: the boxes and flips the workers sample are the same ones."""
    calls: list[tuple[int, int, torch.device]] = []

    def decode_batch(
        datas: list[bytes], boxes: torch.Tensor, flips: torch.Tensor, size: int, device: Any
    ) -> torch.Tensor:
        assert boxes.dtype == torch.int64 and boxes.shape == (len(datas), 4)
        assert flips.dtype == torch.bool and flips.shape == (len(datas),)
        calls.append((len(datas), size, device))
        out = [
            decode_crop(d, tuple(b.tolist()), image_size(d), size, bool(f))  # type: ignore[arg-type]
            for d, b, f in zip(datas, boxes, flips, strict=True)
        ]
        return torch.from_numpy(np.stack(out)).to(device)

    fake = types.ModuleType("mlbench.data.device_decode")
    fake.decode_batch = decode_batch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlbench.data.device_decode", fake)
    for train in (True, False):
        cpu = _all(_loader(imagenet_tree, train=train, workers=1))
        dev = _all(_loader(imagenet_tree, train=train, workers=1, decode_on="device"))
        assert len(cpu) == len(dev)
        for (xa, ya), (xb, yb) in zip(cpu, dev, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert calls and calls[0][1] == 32 and calls[0][2] == torch.device("cpu")


def test_a_resumed_epoch_skips_its_done_steps_without_decoding(
    imagenet_tree: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train/resume.py's replay uses the iterator's ``skip``: no batch of the done steps is
    decoded, and the first step after the resume gets the batch it would have got."""
    from mlbench.data import imageworker
    from mlbench.train import resume

    full = _all(_loader(imagenet_tree, batch_size=4))
    decoded: list[int] = []
    real = imageworker.run_task
    monkeypatch.setattr(
        imageworker, "run_task", lambda cfg, task: decoded.append(task[0]) or real(cfg, task)
    )
    emitted: list[Any] = []
    trainer = types.SimpleNamespace(
        _accumulate=2,
        run_dir=tmp_path,
        step=4,
        _attempt=0,
        timer=None,
        events=types.SimpleNamespace(emit_many=lambda records, **kw: emitted.extend(records)),
        epoch=0.5,
        _window_start=0.0,
    )
    loader = _loader(imagenet_tree, batch_size=4)
    batches = iter(loader)
    assert resume.finish_resume(trainer, None, batches, 2) == 2  # type: ignore[arg-type]
    assert decoded == [] and emitted[0][1] == "resume"
    assert torch.equal(next(batches)[0], full[4][0]) and decoded == [4]
    steps = len(full) // 2 + 1  # one step more than the epoch has
    with pytest.raises(CheckpointError, match="ran out while replaying"):
        resume.finish_resume(trainer, None, iter(loader), steps)  # type: ignore[arg-type]
    loader.close()
