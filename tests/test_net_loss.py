import math

import numpy as np
import pytest
import torch

from v8_model.model.loss import FocalLoss
from v8_model.model.net import ModelLoadError, V8TradingNet, load_model, save_model


def test_architecture_and_temperature():
    net = V8TradingNet()
    linear_shapes = [tuple(m.weight.shape) for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert linear_shapes == [(512, 72), (256, 512), (128, 256), (3, 128)]
    dropouts = [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts == [0.3, 0.3, 0.3]
    assert float(net.temperature.detach()) == pytest.approx(2.5)
    with torch.no_grad():
        net.log_temperature.fill_(-50.0)  # however far the optimiser pushes it, it stays positive
    assert float(net.temperature.detach()) > 0


def test_eval_batch_equals_rows_one_by_one():
    torch.manual_seed(0)
    net = V8TradingNet()
    # Train a few steps so the norm parameters are no longer at their initial values.
    optimizer = torch.optim.AdamW(net.parameter_groups(1e-4), lr=1e-2)
    x, y = torch.randn(512, 72), torch.randint(0, 3, (512,))
    for _ in range(5):
        optimizer.zero_grad()
        FocalLoss()(net(x), y).backward()
        optimizer.step()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(not torch.allclose(n.weight, torch.ones_like(n.weight)) for n in norms)

    net.eval()
    batch = torch.randn(64, 72)
    with torch.no_grad():
        together = net(batch)
        one_by_one = torch.cat([net(row.unsqueeze(0)) for row in batch])
    torch.testing.assert_close(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_temperature_and_norms_are_excluded_from_weight_decay():
    net = V8TradingNet()
    decayed, exempt = net.parameter_groups(1e-4)
    assert decayed["weight_decay"] == 1e-4 and exempt["weight_decay"] == 0.0
    assert any(p is net.log_temperature for p in exempt["params"])
    assert all(p.ndim == 2 for p in decayed["params"])
    assert sum(p.numel() for g in (decayed, exempt) for p in g["params"]) == sum(
        p.numel() for p in net.parameters()
    )


def test_focal_loss_matches_hand_computed_value():
    logits = torch.tensor([[2.0, 0.5, -1.0]])
    target = torch.tensor([0])
    # By hand: p = softmax(logits); q = 0.9 * one_hot + 0.1 / 3
    exp = [math.exp(2.0), math.exp(0.5), math.exp(-1.0)]
    p = [e / sum(exp) for e in exp]
    q = [0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3]
    expected = -0.25 * sum(qk * (1 - pk) ** 2 * math.log(pk) for qk, pk in zip(q, p, strict=True))
    assert FocalLoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # gamma = 0, no smoothing, alpha = 1 reduces to cross-entropy.
    plain = FocalLoss(alpha=1.0, gamma=0.0, label_smoothing=0.0)(logits, target)
    assert plain.item() == pytest.approx(-math.log(p[0]), rel=1e-6)


def test_save_and_load_round_trip_without_pickle(tmp_path):
    torch.manual_seed(1)
    net = V8TradingNet().eval()
    save_model(net, tmp_path)
    with np.load(tmp_path / "weights.npz", allow_pickle=False) as arrays:
        assert "log_temperature" in arrays.files
    loaded = load_model(tmp_path)
    x = torch.randn(8, 72)
    with torch.no_grad():
        torch.testing.assert_close(net(x), loaded(x))


def test_load_refuses_missing_corrupt_and_mismatched(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path)
    save_model(V8TradingNet(), tmp_path)
    (tmp_path / "weights.npz").write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(tmp_path)
    save_model(V8TradingNet(), tmp_path)
    with pytest.raises(ModelLoadError, match="feature names"):
        load_model(tmp_path, expected_feature_names=["other"] * 72)
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(
        config.replace('"format_version": 1', '"format_version": 9')
    )
    with pytest.raises(ModelLoadError, match="format version 9"):
        load_model(tmp_path)
