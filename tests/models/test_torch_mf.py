"""TorchBPR: growing tables, the BPR/Adagrad step, determinism, save/load, top-k on device, CPU vs CUDA."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models import Interactions, OnlineRecommender, torch_mf
from models.torch_mf import TorchBPR

PARAMS = {"n_factors": 6, "lr": 0.1, "l2": 1e-3, "n_negatives": 3, "n_steps": 2, "seed": 11}


def clustered_stream(n: int = 800, n_users: int = 40, n_items: int = 60, seed: int = 0) -> Interactions:
    """Users of cluster c pick items of cluster c (3 clusters)."""
    rng = np.random.default_rng(seed)
    users = rng.integers(n_users, size=n)
    items = (users % 3) + 3 * rng.integers(n_items // 3, size=n)
    return Interactions.from_columns(
        [f"u{x}" for x in users], [f"i{x}" for x in items], weights=rng.uniform(0.5, 2.0, size=n)
    )


def train(model: TorchBPR, events: Interactions, batch: int = 50) -> TorchBPR:
    for start in range(0, len(events), batch):
        model.learn(events.select(np.arange(start, min(start + batch, len(events)))))
    return model


def tables(model: TorchBPR) -> dict[str, np.ndarray]:
    return {k: v for k, v in model._state().items() if k != "generator_state"}


@pytest.mark.parametrize("path", ["numpy", "torch"])
def test_one_step_equals_autograd_bpr_with_adagrad(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Known answer: the closed-form gradients and row-wise Adagrad match autograd on the stated loss.

    Both implementations of the step: NumPy (small batches on the CPU) and torch (the rest, and CUDA).
    """
    model = train(TorchBPR(**{**PARAMS, "n_steps": 1}, device="cpu"), clustered_stream(200))
    monkeypatch.setattr(torch_mf, "_NUMPY_EVENTS", 10_000 if path == "numpy" else 0)
    batch = clustered_stream(200).select(np.arange(30))  # known users and items
    u = torch.from_numpy(model.user_index.lookup(batch.users))
    i = torch.from_numpy(model.item_index.lookup(batch.items))
    m, lr, l2 = model.n_negatives, model.lr, model.l2
    neg = torch.from_numpy(copy.deepcopy(model._negatives).draw((len(u), m), model.n_items))
    p = model._p[: model.n_users].clone().requires_grad_(True)
    q = model._q[: model.n_items].clone().requires_grad_(True)
    b = model._b[: model.n_items].clone().requires_grad_(True)
    w = torch.from_numpy(batch.weights)
    x = (p[u] * q[i]).sum(1, keepdim=True) + b[i][:, None] - torch.einsum("nk,nmk->nm", p[u], q[neg]) - b[neg]
    loss = (-torch.nn.functional.logsigmoid(x) * w[:, None] / m).sum()
    loss = loss + l2 / 2 * ((p[u] ** 2).sum() + (q[i] ** 2).sum() + (b[i] ** 2).sum())
    loss = loss + l2 / (2 * m) * ((q[neg] ** 2).sum() + (b[neg] ** 2).sum())
    loss.backward()
    expected = {}
    for name, param, acc in (("p", p, model._p_acc), ("q", q, model._q_acc), ("b", b, model._b_acc)):
        a = acc[: len(param)] + param.grad**2
        touched = (param.grad != 0).reshape(len(param), -1).any(1)
        new = param.detach() - lr * param.grad / (a.sqrt() + 1e-8)
        expected[name] = torch.where(touched.reshape(-1, *([1] * (param.dim() - 1))), new, param.detach())
    model.learn(batch)
    torch.testing.assert_close(model._p[: model.n_users], expected["p"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model._q[: model.n_items], expected["q"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model._b[: model.n_items], expected["b"], atol=1e-5, rtol=1e-5)


def test_growth_keeps_old_rows_and_optimizer_state() -> None:
    model = train(TorchBPR(**PARAMS, device="cpu"), clustered_stream(300))
    before = tables(model)
    capacity = model._q.shape[0]
    model.add_items([f"new{j}" for j in range(3 * capacity)])
    assert model._q.shape[0] >= model.n_items > capacity
    after = tables(model)
    for name in ("item_factors", "item_bias", "item_factors_adagrad", "item_bias_adagrad"):
        np.testing.assert_array_equal(after[name][: len(before[name])], before[name])
    new_rows = after["item_factors"][len(before["item_factors"]) :]
    assert np.all(np.linalg.norm(new_rows, axis=1) > 0)  # initialised, not left at zero
    assert np.all(after["item_bias"][len(before["item_bias"]) :] == 0)
    # learning a batch of brand-new users leaves the other users' rows untouched
    model.learn(Interactions.from_columns(["n1", "n2"], ["i0", "new5"]))
    np.testing.assert_array_equal(model._state()["user_factors"][: len(before["user_factors"])], before["user_factors"])


def test_same_seed_same_model_on_cpu() -> None:
    events = clustered_stream(400)
    a = train(TorchBPR(**PARAMS, device="cpu"), events)
    b = train(TorchBPR(**PARAMS, device="cpu"), events)
    c = train(TorchBPR(**{**PARAMS, "seed": 12}, device="cpu"), events)
    for name, value in tables(a).items():
        np.testing.assert_array_equal(value, tables(b)[name])
    assert not np.array_equal(tables(a)["user_factors"], tables(c)["user_factors"])


def test_learns_clusters() -> None:
    model = train(TorchBPR(**PARAMS, device="cpu"), clustered_stream(2000), batch=100)
    recs = model.recommend(["u0", "u1", "u2"], k=5, exclude_seen=False).items
    for cluster, row in enumerate(recs):
        share = np.mean([int(item[1:]) % 3 == cluster for item in row])
        assert share >= 0.8, (cluster, row)


def test_save_load_continues_exactly(tmp_path) -> None:
    events = clustered_stream(600)
    model = train(TorchBPR(**PARAMS, device="cpu"), events.select(np.arange(300)))
    path = model.save(tmp_path / "bpr")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "meta.json"]
    loaded = OnlineRecommender.load(path)
    assert loaded.get_params() == model.get_params()
    extra = Interactions.from_columns(["brand-new", "u1"], ["i1", "brand-new-item"])
    for m in (model, loaded):
        train(m, events.select(np.arange(300, 600)))
        m.learn(extra)
    for name, value in tables(model).items():
        np.testing.assert_array_equal(value, tables(loaded)[name])


def test_scores_topk_device_and_cold_users() -> None:
    model = train(TorchBPR(**PARAMS, device="cpu"), clustered_stream(400))
    s = model._state()
    p, q, b = s["user_factors"], s["item_factors"], s["item_bias"]
    u = model.user_index.lookup(["u3", "u8", "nobody"])
    expected = np.vstack([p[u[:2]], p.mean(0)]) @ q.T + b
    np.testing.assert_allclose(model._score(u), expected, rtol=1e-5, atol=1e-5)
    users = ["u3", "u8", "nobody"]
    idx, vals = model.topk_device(users, k=8)
    assert idx.shape == (3, 8)
    recs = model.recommend(users, k=8)
    for user, row, items in zip(users, idx.cpu().tolist(), recs.items, strict=True):
        assert set(model.item_index.ids_of(row)) == set(items)
        assert not set(items) & model.seen_items(user)
    np.testing.assert_allclose(vals.cpu().numpy(), np.array(recs.scores), rtol=1e-5, atol=1e-6)
    # more than the eligible items: padded with -1 / -inf
    idx, vals = model.topk_device(["u3"], k=1000)
    n_eligible = model.n_items - len(model.seen_items("u3"))
    assert (idx[0] >= 0).sum().item() == n_eligible
    assert torch.isneginf(vals[0, n_eligible:]).all()
    assert model.topk_device(["u3"], k=0)[0].shape == (1, 0)
    with pytest.raises(ValueError, match="k must be"):
        model.topk_device(["u3"], k=-1)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="n_negatives"):
        TorchBPR(n_negatives=0)
    with pytest.raises(ValueError, match="n_steps"):
        TorchBPR(n_steps=0)


def test_auto_device() -> None:
    model = TorchBPR()
    assert model.get_params()["device"] is None
    assert model.torch_device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_agree() -> None:
    events = clustered_stream(1500)
    cpu = train(TorchBPR(**PARAMS, device="cpu"), events)
    gpu = train(TorchBPR(**PARAMS, device="cuda"), events)
    assert gpu._p.device.type == "cuda"
    for name, value in tables(cpu).items():
        np.testing.assert_allclose(tables(gpu)[name], value, rtol=1e-3, atol=1e-4, err_msg=name)
    users = [f"u{j}" for j in range(40)]
    a, b = cpu.recommend(users, k=10), gpu.recommend(users, k=10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a.items, b.items, strict=True)])
    assert overlap >= 0.95
    idx, _ = gpu.topk_device(users, k=10)
    assert idx.device.type == "cuda"
    # CUDA is deterministic too (index_put_ with accumulate is sort-based there)
    again = train(TorchBPR(**PARAMS, device="cuda"), events)
    for name, value in tables(gpu).items():
        np.testing.assert_array_equal(tables(again)[name], value, err_msg=name)


def test_numpy_and_torch_steps_learn_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU's small-batch NumPy step and the torch step are one algorithm: same draws, same tables up to rounding."""
    events = clustered_stream(600)
    monkeypatch.setattr(torch_mf, "_NUMPY_EVENTS", 10_000)
    numpy_model = train(TorchBPR(**PARAMS, device="cpu"), events, batch=7)
    monkeypatch.setattr(torch_mf, "_NUMPY_EVENTS", 0)
    torch_model = train(TorchBPR(**PARAMS, device="cpu"), events, batch=7)
    for name, value in tables(torch_model).items():
        np.testing.assert_allclose(tables(numpy_model)[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


def test_copies_do_not_share_the_numpy_views() -> None:
    model = train(TorchBPR(**PARAMS, device="cpu"), clustered_stream(200), batch=1)
    twin = copy.deepcopy(model)
    before = tables(model)
    twin.learn(clustered_stream(50, seed=3))
    for name, value in tables(model).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)  # the original did not move
    assert not np.array_equal(tables(twin)["user_factors"], before["user_factors"])
