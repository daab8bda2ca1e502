"""mlbench.data.augment: batched pad-crop-flip and normalisation."""

from __future__ import annotations

import itertools

import pytest
import torch

from mlbench.data.augment import normalize, random_crop_flip


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b, c, h, w, seed=0, dtype=torch.uint8):
    # values 1..255: never equal to the zero padding, so each crop is identifiable
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (b, c, h, w), generator=g).to(dtype)


def _matches(out: torch.Tensor, img: torch.Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """All (oy, ox, flip) such that ``out`` is that crop of the zero-padded ``img``."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=img.dtype)
    padded[:, padding : padding + h, padding : padding + w] = img
    found = []
    for oy, ox, flip in itertools.product(range(2 * padding + 1), range(2 * padding + 1), (0, 1)):
        crop = padded[:, oy : oy + h, ox : ox + w]
        if flip:
            crop = crop.flip(-1)
        if torch.equal(crop, out):
            found.append((oy, ox, bool(flip)))
    return found


def test_padding_zero_is_identity_or_mirror():
    x = _images(64, 3, 8, 8)
    out = random_crop_flip(x, _gen(1), padding=0)
    kinds = []
    for i in range(len(x)):
        if torch.equal(out[i], x[i]):
            kinds.append("same")
        else:
            assert torch.equal(out[i], x[i].flip(-1)), f"sample {i} is neither x nor its mirror"
            kinds.append("flipped")
    assert 0 < kinds.count("same") < len(x)


def test_every_output_is_a_crop_of_the_padded_input():
    padding = 2
    x = _images(300, 2, 5, 6, seed=3)
    out = random_crop_flip(x, _gen(4), padding=padding)
    assert out.shape == x.shape and out.dtype == x.dtype
    seen = set()
    for i in range(len(x)):
        found = _matches(out[i], x[i], padding)
        assert found, f"sample {i} is not a crop(+flip) of its zero-padded input"
        seen.add(found[0])
    # offsets and flips are really drawn per sample: most of the 5*5*2 = 50 choices appear
    assert len(seen) >= 40
    assert {oy for oy, _, _ in seen} == set(range(5))
    assert {ox for _, ox, _ in seen} == set(range(5))


def test_samples_in_a_batch_draw_independently():
    x = _images(1, 1, 6, 6).repeat(32, 1, 1, 1)  # 32 copies of one image
    out = random_crop_flip(x, _gen(2), padding=2)
    distinct = {tuple(o.flatten().tolist()) for o in out}
    assert len(distinct) > 10


def test_flips_about_half_the_time():
    n = 4000
    x = torch.arange(4, dtype=torch.float32).view(1, 1, 1, 4).repeat(n, 1, 1, 1)
    out = random_crop_flip(x, _gen(6), padding=0)
    flipped = (out[:, 0, 0, 0] == 3).sum().item()
    kept = (out[:, 0, 0, 0] == 0).sum().item()
    assert flipped + kept == n
    assert 0.45 < flipped / n < 0.55


def test_deterministic_for_a_seed():
    x = _images(16, 3, 8, 8)
    a = random_crop_flip(x, _gen(11))
    b = random_crop_flip(x, _gen(11))
    c = random_crop_flip(x, _gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_advances_between_calls():
    x = _images(16, 3, 8, 8)
    g = _gen(0)
    assert not torch.equal(random_crop_flip(x, g), random_crop_flip(x, g))


def test_input_is_not_modified():
    x = _images(8, 3, 8, 8)
    before = x.clone()
    random_crop_flip(x, _gen(0))
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_matches_formula(dtype):
    x = _images(4, 3, 5, 5, dtype=dtype)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    out = normalize(x, mean, std)
    assert out.dtype == torch.float32
    for ch in range(3):
        manual = (x[:, ch].double() / 255.0 - mean[ch]) / std[ch]
        torch.testing.assert_close(out[:, ch].double(), manual, rtol=1e-5, atol=1e-5)


def test_normalize_extremes():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1)
    out = normalize(x, (0.5,), (0.25,))
    assert out.flatten().tolist() == pytest.approx([-2.0, 2.0])


# --- placement: data.augment_on (cpu before the copy, device after it) gives the same batches ----


def test_loader_device_transform_equals_transform():
    """BatchLoader: a transform after the copy (inputs resident or not) draws the same stream."""
    from mlbench.data.loader import BatchLoader

    x = _images(40, 3, 8, 8, seed=5)
    y = torch.arange(40)

    def aug(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return normalize(random_crop_flip(xb, gen, 2), (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))

    def batches(**kw) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader = BatchLoader(x, y, 16, shuffle=True, drop_last=False, seed=7, **kw)
        return [b for _ in range(2) for b in loader]  # two epochs: the stream runs on

    before = batches(transform=aug)
    after = batches(device_transform=aug)
    assert len(before) == 6
    for (xa, ya), (xb, yb) in zip(before, after, strict=True):
        assert xa.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(before[0][0], before[3][0][: len(before[0][0])])


def _cifar_loaders(data_dir, augment_on: str):
    from mlbench.dist import DistContext
    from mlbench.runs import resolve_config

    task, cfg = resolve_config(
        "cifar10-resnet20",
        overrides=[
            f"data.dir={data_dir}",
            f"data.augment_on={augment_on}",
            "data.train_samples=600",
            "data.val_samples=200",
            "data.batch_size=64",
        ],
    )
    cpu = torch.device("cpu")
    ctx = DistContext(rank=1, world_size=2, local_rank=1, backend="gloo", device=cpu)
    return task.build_data(cfg, ctx)


def test_cifar_augment_on_cpu_and_device_give_identical_batches(real_data):
    cpu = _cifar_loaders(real_data, "cpu")
    dev = _cifar_loaders(real_data, "device")
    auto = _cifar_loaders(real_data, "auto")
    # where each placement puts the work (auto on a CPU device is cpu)
    assert cpu.train.transform is not None and cpu.train.device_transform is None
    assert dev.train.transform is None and dev.train.device_transform is not None
    assert auto.train.transform is not None and auto.train.device_transform is None
    for a, b, c in zip(list(cpu.train), list(dev.train), list(auto.train), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[0], c[0])
        assert a[0].dtype == torch.float32 and a[0].shape == (64, 3, 32, 32)
    for a, b in zip(list(cpu.val), list(dev.val), strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cifar_augment_on_the_gpu_is_bit_identical(real_data):
    from mlbench.dist import DistContext
    from mlbench.runs import resolve_config

    cuda = torch.device("cuda", torch.cuda.current_device())
    got = {}
    for where in ("cpu", "device"):
        task, cfg = resolve_config(
            "cifar10-resnet20",
            overrides=[f"data.dir={real_data}", f"data.augment_on={where}", "data.batch_size=64"],
        )
        ctx = DistContext(rank=0, world_size=1, local_rank=0, backend="nccl", device=cuda)
        loader = task.build_data(cfg, ctx).train
        got[where] = [(x.cpu(), y.cpu()) for _, (x, y) in zip(range(5), loader, strict=False)]
        assert all(x.device == cuda for x, _ in [next(iter(loader))])
    for (xa, ya), (xb, yb) in zip(got["cpu"], got["device"], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
