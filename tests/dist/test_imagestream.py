"""The image loader inside real gloo ranks (spawned, daemonic, as the test harness starts them):
its workers start there without forking a gloo process, and the ranks' train shards, gathered
over gloo, are disjoint and equal; their val shards cover the split once."""

from __future__ import annotations

from typing import Any

import torch

from mlbench.testing import run_ranks


def _labels_and_indices(ctx: Any, files: list[str], labels: list[int]) -> dict[str, Any]:
    import torch.distributed as dist

    from mlbench.data.imagestream import ImageStreamLoader

    out: dict[str, Any] = {}
    for train in (True, False):
        loader = ImageStreamLoader(
            files,
            labels,
            4,
            train=train,
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=7,
            image_size=24,
            workers=2,
        )
        shard = torch.from_numpy(loader.shard())
        ys = torch.cat([y for x, y in loader if x.shape[1:] == (3, 24, 24)])
        loader.close()
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(ctx.world_size)]
        dist.all_gather(sizes, torch.tensor([len(shard)]))
        gathered = [torch.zeros(int(n), dtype=torch.int64) for n in sizes]
        if len(set(int(n) for n in sizes)) == 1:
            dist.all_gather(gathered, shard)
        else:  # val shards may differ by one: gather through the largest, padded
            big = max(int(n) for n in sizes)
            padded = [torch.full((big,), -1, dtype=torch.int64) for _ in sizes]
            dist.all_gather(padded, torch.cat([shard, torch.full((big - len(shard),), -1)]))
            gathered = [p[p >= 0] for p in padded]
        out["train" if train else "val"] = {
            "all": [g.tolist() for g in gathered],
            "labels": ys.tolist(),
            "expect": [labels[i] for i in shard.tolist()],
        }
    return out


def test_loader_in_gloo_ranks(imagenet_tree: Any) -> None:
    files = [str(imagenet_tree.root / rel) for rel, _ in imagenet_tree.train]
    labels = [label for _, label in imagenet_tree.train]
    results = run_ranks(_labels_and_indices, 2, files, labels)
    n = len(files)
    train = results[0]["train"]["all"]
    assert train == results[1]["train"]["all"]  # both ranks gathered the same
    assert len(train[0]) == len(train[1]) == n // 2
    assert not set(train[0]) & set(train[1])
    val = results[0]["val"]["all"]
    assert sorted(val[0] + val[1]) == list(range(n))
    for r in results:
        # train drops the short last batch, val keeps it
        assert r["train"]["labels"] == r["train"]["expect"][: len(r["train"]["labels"])]
        assert len(r["train"]["labels"]) == (n // 2) // 4 * 4
        assert r["val"]["labels"] == r["val"]["expect"]
