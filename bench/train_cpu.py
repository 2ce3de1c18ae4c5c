"""Training throughput: the project's index-slice loop against a plain DataLoader loop.

Both train the same V8TradingNet with the same FocalLoss, optimiser and batch size on the same
rows, one epoch each, in one process; the ratio is what to compare (the machine is shared).
Usage: python bench/train_cpu.py [rows] [repeats] [device]   (device: cpu by default, or cuda)
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from v8_model.config import TrainConfig
from v8_model.model.loop import train_model
from v8_model.model.loss import FocalLoss
from v8_model.model.net import V8TradingNet


def dataloader_epoch(x: np.ndarray, y: np.ndarray, batch_size: int, device: str) -> float:
    """The conventional loop: per-sample indexing and collation by a DataLoader."""
    torch.manual_seed(0)
    model = V8TradingNet().to(device)
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-4), lr=1e-3)
    loss_fn = FocalLoss()
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
        batch_size=batch_size,
        shuffle=True,
    )
    model.train()
    started = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = loss_fn(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def project_epoch(x: np.ndarray, y: np.ndarray, batch_size: int, device: str) -> float:
    """One epoch of v8_model.model.loop.train_model; its own timer excludes nothing but set-up."""
    config = TrainConfig(epochs=1, batch_size=batch_size, device=device)
    val_rows = 1_000  # the loop validates once per epoch; keep that cost negligible
    result = train_model(x, y, x[:val_rows], y[:val_rows], config)
    return result.train_seconds


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 72)).astype(np.float32)
    y = rng.integers(0, 3, rows).astype(np.int64)
    batch = TrainConfig().batch_size
    print(f"rows={rows} batch_size={batch} device={device} threads={torch.get_num_threads()}")
    project = min(project_epoch(x, y, batch, device) for _ in range(repeats))
    loader = min(dataloader_epoch(x, y, batch, device) for _ in range(repeats))
    print(f"index-slice loop : {rows / project:>10,.0f} samples/s ({project:.2f} s/epoch)")
    print(f"DataLoader loop  : {rows / loader:>10,.0f} samples/s ({loader:.2f} s/epoch)")
    print(f"speed-up ratio   : {loader / project:.2f}x")


if __name__ == "__main__":
    main()
