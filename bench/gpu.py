"""Torch BPR on CUDA versus CPU: learning updates per second and top-N time, at the same sizes.

For each device (the CPU, and CUDA when ``torch.cuda.is_available()``):

- **learn**: :class:`models.torch_mf.TorchBPR` (``n_factors=64``, other
  hyperparameters at their defaults: 4 optimisation steps of 4 sampled
  negatives per event) learns micro-batches of the synthetic stream (100k
  users, 50k items) for each batch size; events learned per second (after one
  untimed warm-up batch; CUDA is synchronised before the clock stops);
- **top-N**: a model is given catalogues of 10k, 100k and 1M items
  (``add_items``) and learns a short stream over them; then
  :meth:`~models.torch_mf.TorchBPR.topk_device` (one ``addmm`` and one
  ``torch.topk`` on the device, seen items excluded) for 1,000 users, top-100;
  median of ``repeats`` runs after a warm-up call.

Without CUDA the result says ``"cuda": false`` and holds the CPU figures; the
same command on a GPU machine (``python -m bench --only gpu``) measures both
and their ratios in one run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import fmt, fmt_ratio, md_table, summarize

__all__ = ["Config", "config", "markdown", "run"]


@dataclass
class Config:
    """What the GPU benchmark runs; :func:`config` gives the full and ``--quick`` ones."""

    n_users: int = 100_000
    n_items: int = 50_000
    n_factors: int = 64
    batch_sizes: tuple[int, ...] = (1_000, 10_000)
    learn_events: int = 200_000
    learn_cap_s: float = 20.0
    topn_items: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    topn_train_events: int = 20_000
    topn_users: int = 1_000
    k: int = 100
    repeats: int = 3
    devices: tuple[str, ...] | None = None  # None: cpu, and cuda when available
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def config(quick: bool = False) -> Config:
    """The full configuration, or the ``--quick`` one."""
    if not quick:
        return Config()
    return Config(
        n_users=10_000, n_items=5_000, batch_sizes=(1_000,), learn_events=10_000, learn_cap_s=3.0,
        topn_items=(10_000,), topn_train_events=5_000, repeats=1,
    )  # fmt: skip


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _learn(cfg: Config, device: str, batch_size: int) -> dict[str, Any]:
    from models.torch_mf import TorchBPR
    from producers.synthetic import SyntheticStream

    stream = SyntheticStream(n_users=cfg.n_users, n_items=cfg.n_items, seed=cfg.seed)
    batches = stream.batches(cfg.learn_events + batch_size, chunk=batch_size)
    model = TorchBPR(n_factors=cfg.n_factors, device=device, seed=cfg.seed)
    model.learn(next(batches))  # warm-up: allocations, kernels
    _sync(device)
    events = 0
    seconds = 0.0
    for batch in batches:
        start = time.perf_counter()
        model.learn(batch)
        _sync(device)
        seconds += time.perf_counter() - start
        events += len(batch)
        if seconds >= cfg.learn_cap_s:
            break
    return {
        "batch_size": batch_size,
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds else None,
        "params": {k: v for k, v in model.get_params().items() if k in ("n_factors", "n_steps", "n_negatives")},
    }


def _topn(cfg: Config, device: str, n_items: int) -> dict[str, Any]:
    import torch

    from models.torch_mf import TorchBPR
    from producers.synthetic import SyntheticStream

    stream = SyntheticStream(n_users=cfg.n_users, n_items=n_items, seed=cfg.seed)
    model = TorchBPR(n_factors=cfg.n_factors, device=device, seed=cfg.seed)
    model.add_items([f"i{j}" for j in range(n_items)])
    for batch in stream.batches(cfg.topn_train_events, chunk=5_000):
        model.learn(batch)
    users: dict[str, None] = {}
    for batch in stream.batches(20 * cfg.topn_users, chunk=5 * cfg.topn_users):
        users.update((u, None) for u in batch.users.tolist() if model.user_index.get(u) >= 0)
        if len(users) >= cfg.topn_users:
            break
    ids = list(users)[: cfg.topn_users]
    model.topk_device(ids, k=cfg.k)  # warm-up
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        idx, _ = model.topk_device(ids, k=cfg.k)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    out: dict[str, Any] = {"items": n_items, "users": len(ids), "k": cfg.k, "seconds": summarize(seconds)}
    if device.startswith("cuda"):
        out["cuda_peak_bytes"] = int(torch.cuda.max_memory_allocated())
    del model, idx
    return out


def run(cfg: Config) -> dict[str, Any]:
    """Run the GPU benchmark; return its JSON-ready result (see :func:`markdown`)."""
    import torch

    cuda = bool(torch.cuda.is_available())
    devices = list(cfg.devices) if cfg.devices else ["cpu"] + (["cuda"] if cuda else [])
    out: dict[str, Any] = {
        "config": asdict(cfg),
        "notes": list(cfg.notes),
        "targets": [],
        "cuda": cuda,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "devices": {},
    }
    if cuda:
        out["cuda_device"] = torch.cuda.get_device_name(0)
    for device in devices:
        fig: dict[str, Any] = {"learn": [], "topn": []}
        for bs in cfg.batch_sizes:
            fig["learn"].append(_learn(cfg, device, bs))
        for n in cfg.topn_items:
            fig["topn"].append(_topn(cfg, device, n))
        out["devices"][device] = fig
    if "cuda" in out["devices"] and "cpu" in out["devices"]:
        cpu, gpu = out["devices"]["cpu"], out["devices"]["cuda"]
        out["ratios"] = {
            "learn": [
                {"batch_size": c["batch_size"], "cuda_over_cpu": g["events_per_s"] / c["events_per_s"]}
                for c, g in zip(cpu["learn"], gpu["learn"], strict=True)
            ],
            "topn": [
                {"items": c["items"], "cpu_over_cuda_time": c["seconds"]["median"] / g["seconds"]["median"]}
                for c, g in zip(cpu["topn"], gpu["topn"], strict=True)
            ],
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    """The GPU section of ``results.md``."""
    cfg = result["config"]
    head = (
        f"`torch.cuda.is_available()`: **{result['cuda']}**"
        + (
            f" ({result['cuda_device']})"
            if result.get("cuda_device")
            else "; CPU figures only (run `python -m bench --only gpu` on a GPU machine for CUDA and the ratios)"
        )
        + f". torch {result['torch']}, {result['torch_threads']} CPU threads. TorchBPR, {cfg['n_factors']} factors."
    )
    learn_rows, topn_rows = [], []
    ratios = result.get("ratios", {})
    for device, fig in result["devices"].items():
        for j, r in enumerate(fig["learn"]):
            ratio = ratios.get("learn", [])[j]["cuda_over_cpu"] if device == "cuda" and ratios else None
            learn_rows.append(
                [
                    device,
                    f"{r['batch_size']:,}",
                    fmt(r["events_per_s"]),
                    f"{r['events']:,} in {r['seconds']:.1f} s",
                    fmt_ratio(ratio) if ratio else "",
                ]
            )
        for j, r in enumerate(fig["topn"]):
            ratio = ratios.get("topn", [])[j]["cpu_over_cuda_time"] if device == "cuda" and ratios else None
            topn_rows.append(
                [
                    device,
                    f"{r['items']:,}",
                    f"{r['users']:,}",
                    f"{r['seconds']['median']:.4f}",
                    fmt_ratio(ratio) if ratio else "",
                ]
            )
    params = result["devices"][next(iter(result["devices"]))]["learn"][0]["params"] if result["devices"] else {}
    out = [
        head,
        "",
        f"Learning ({cfg['n_users']:,} users, {cfg['n_items']:,} items synthetic stream; {params}): events learned per second.",
        "",
        md_table(["device", "batch size", "events/s", "measured", "CUDA / CPU"], learn_rows),
        "",
        f"`topk_device`: top-{cfg['k']} for {cfg['topn_users']:,} users, seen items excluded (median of {cfg['repeats']}).",
        "",
        md_table(["device", "items", "users", "seconds", "CPU time / CUDA time"], topn_rows),
    ]
    for note in result.get("notes", []):
        out.append(f"- {note}")
    return "\n".join(out)
