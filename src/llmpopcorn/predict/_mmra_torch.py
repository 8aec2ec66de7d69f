"""Torch training of :class:`~llmpopcorn.predict.mmra.RetrievalAttention`.

Imported only by ``fit``. The network mirrors ``RetrievalAttention.forward`` layer
for layer; its weights are exported as float32 NumPy arrays.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def build_network(torch: Any, model: Any) -> Any:
    nn = torch.nn
    hidden, dim = model.hidden, model.dim_

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.target = nn.Linear(dim, hidden)
            self.neigh = nn.Linear(dim, hidden)
            self.side = nn.Linear(2, hidden)
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.sim_scale = nn.Parameter(torch.tensor(1.0))
            n_cat, cat_dim = len(model.categories_), 16
            self.category = nn.Embedding(n_cat, cat_dim)
            head_in = 2 * hidden + cat_dim + 4
            if model.visual_dim:
                self.visual = nn.Linear(model.visual_dim, hidden // 2)
                head_in += hidden // 2
            if model.text_prior:
                head_in += 1
            self.head1 = nn.Linear(head_in, hidden)
            self.head2 = nn.Linear(hidden, 1)
            self.drop = nn.Dropout(model.dropout)

        def forward(self, emb, nemb, labels, sim, cat, visual=None, prior=None):
            relu = torch.relu
            h = self.drop(relu(self.target(emb)))
            side = torch.stack([labels, sim], dim=-1)
            nb = relu(self.neigh(nemb) + self.side(side))
            q = self.query(h)
            scores = torch.einsum("nh,nkh->nk", q, self.key(nb)) / math.sqrt(hidden)
            att = torch.softmax(scores + self.sim_scale * sim, dim=1)
            ctx = torch.einsum("nk,nkh->nh", att, self.value(nb))
            by_sim = torch.softmax(sim / model.tau, dim=1)
            parts = [
                h,
                ctx,
                self.category(cat),
                (att * labels).sum(1, keepdim=True),
                (by_sim * labels).sum(1, keepdim=True),
                labels.mean(1, keepdim=True),
                sim.mean(1, keepdim=True),
            ]
            if visual is not None:
                parts.append(relu(self.visual(visual)))
            if prior is not None:
                parts.append(prior[:, None])
            feats = self.drop(torch.cat(parts, dim=1))
            out = self.head2(relu(self.head1(feats)))[:, 0]
            return out + prior if prior is not None else out

    return Net()


def train_network(
    model: Any,
    torch: Any,
    train: dict[str, np.ndarray],
    valid: dict[str, np.ndarray] | None,
    progress: Any = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train with MSE + Adam, early stopping on validation MSE; return (weights, history).

    Runs on ``model.threads`` CPU threads (default 1): this network is small, and on a
    shared machine torch's thread pool spends far more time waiting than computing
    (measured: backward 19 ms on 1 thread vs 430 ms on 2 under load).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(model.threads)))
    try:
        return _train(model, torch, train, valid, progress)
    finally:
        torch.set_num_threads(previous)


def _train(model, torch, train, valid, progress):
    torch.manual_seed(model.seed)
    gen = torch.Generator().manual_seed(model.seed)
    net = build_network(torch, model)
    opt = torch.optim.Adam(net.parameters(), lr=model.lr, weight_decay=model.weight_decay)
    memory = torch.from_numpy(model.memory_.astype(np.float32))
    memory_y = torch.from_numpy(model.memory_y_)

    def tensors(data: dict[str, np.ndarray]) -> dict[str, Any]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in data.items()}

    tr = tensors(train)
    va = tensors(valid) if valid is not None else None

    def run(batch: dict[str, Any], rows: Any, training: bool) -> Any:
        idx = batch["idx"][rows]
        cat = batch["cat"][rows]
        if training and model.category_dropout > 0:
            drop = torch.rand(cat.shape, generator=gen) < model.category_dropout
            cat = torch.where(drop, torch.zeros_like(cat), cat)
        visual = batch["visual"][rows] if "visual" in batch else None
        prior = batch["prior"][rows] if "prior" in batch else None
        return net(
            batch["emb"][rows], memory[idx], memory_y[idx], batch["sim"][rows], cat, visual, prior
        )

    def evaluate(batch: dict[str, Any]) -> float:
        net.eval()
        with torch.no_grad():
            n = batch["y"].shape[0]
            pred = torch.cat(
                [run(batch, torch.arange(i, min(i + 4096, n)), False) for i in range(0, n, 4096)]
            )
            return float(torch.mean((pred - batch["y"]) ** 2))

    n = tr["y"].shape[0]
    best_state, best_loss, best_epoch, waited = None, math.inf, -1, 0
    history: dict[str, Any] = {"train_mse": [], "valid_mse": []}
    for epoch in range(model.epochs):
        net.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, model.batch_size):
            rows = order[start : start + model.batch_size]
            loss = torch.mean((run(tr, rows, True) - tr["y"][rows]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        history["train_mse"].append(round(total / n, 5))
        if va is not None:
            loss = evaluate(va)
            history["valid_mse"].append(round(loss, 5))
            if loss < best_loss - 1e-5:
                best_loss, best_epoch, waited = loss, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                waited += 1
        if progress is not None:
            progress(epoch + 1, model.epochs, history)
        if va is not None and waited >= model.patience:
            break
    if best_state is not None:
        net.load_state_dict(best_state)
    history["best_epoch"] = best_epoch + 1 if best_epoch >= 0 else len(history["train_mse"])
    weights = {
        name: value.detach().cpu().numpy().astype(np.float32).reshape(value.shape)
        for name, value in net.state_dict().items()
    }
    weights["sim_scale"] = np.asarray(weights["sim_scale"], dtype=np.float32)
    return weights, history
