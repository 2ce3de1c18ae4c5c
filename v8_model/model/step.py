"""One optimizer step, and the two ways it runs: eagerly, or replayed as a captured CUDA graph.

At the seed's batch size (256) the V8 net's arithmetic is a few microseconds of GPU time per step,
so an eager step is bound by ~100 kernel launches and their Python. `CapturedStep` records the
whole step once (batch gather from the on-device tensors, forward, focal loss, backward, gradient
clipping, AdamW, loss accumulation) with `torch.cuda.graph` and replays it: one launch per step.
Both run the same `optimizer_step` body, so what is tested eagerly on the CPU is what is captured.

Rules a captured step follows (CUDA graph rules):
- static inputs: the batch's row indices are copied into one fixed index buffer before a replay;
- the learning rate is a device tensor the graph reads; the schedule (host side) fills it in place
  after every step, so the cosine schedule keeps today's values;
- AdamW is `capturable` (its step counter lives on the device);
- gradients are allocated during capture and overwritten by each replay (no set-to-None);
- warm-up steps run on a side stream before capture (cuBLAS/allocator set-up); they are real,
  counted training steps, so the trajectory is the eager one's;
- dropout draws from the default CUDA generator, which PyTorch registers with the graph: every
  replay advances its offset and gets fresh masks; the masks differ from the eager path's, the
  loss trajectory agrees statistically;
- the last, partial batch of an epoch has another shape: it runs eagerly through the same body on
  the same parameters and optimizer state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Real training steps run eagerly on a side stream before capture, as the CUDA graph docs ask.
WARMUP_STEPS = 3


@dataclass
class CosineDecay:
    """The learning-rate factor at step t: 0.5 * (1 + cos(pi * t / total_steps)), from 1 to 0.

    A callable object (not a lambda) so `LambdaLR.state_dict` saves its settings as JSON.
    """

    total_steps: int

    def __call__(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))


def build_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to zero over `total_steps` optimizer steps, stepped once per step.

    The closed form (not CosineAnnealingLR's recursion, which reads the current lr back) so a
    step never reads a device-side learning rate: no host sync per step on the captured path.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, CosineDecay(max(1, total_steps)))


def optimizer_step(
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    features: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    loss_sum: torch.Tensor,
    *,
    grads_to_none: bool,
) -> None:
    """One step on the rows `index` of the on-device training tensors; adds the batch's summed
    loss to `loss_sum`. No host sync, no shape that depends on values: safe to capture."""
    batch_features = features.index_select(0, index)
    batch_labels = labels.index_select(0, index)
    loss = loss_fn(model(batch_features), batch_labels)
    optimizer.zero_grad(set_to_none=grads_to_none)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    loss_sum.add_(loss.detach() * index.numel())


class EagerStep:
    """Runs `optimizer_step` directly: the CPU path, and the reference the captured one matches."""

    captured = False

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
        features: torch.Tensor,
        labels: torch.Tensor,
    ) -> None:
        self.model, self.loss_fn, self.optimizer, self.grad_clip = (
            model,
            loss_fn,
            optimizer,
            grad_clip,
        )
        self.features, self.labels = features, labels
        self.loss_sum = torch.zeros((), device=features.device)
        # A checkpoint written by a captured run restores `capturable=True`; eager steps do not
        # need it (and the CPU does not support it).
        for group in optimizer.param_groups:
            group["capturable"] = False

    def __call__(self, index: torch.Tensor) -> None:
        self._body(index, grads_to_none=True)

    def _body(self, index: torch.Tensor, grads_to_none: bool = False) -> None:
        optimizer_step(
            self.model,
            self.loss_fn,
            self.optimizer,
            self.grad_clip,
            self.features,
            self.labels,
            index,
            self.loss_sum,
            grads_to_none=grads_to_none,
        )


class CapturedStep(EagerStep):
    """Full batches replay one CUDA graph of `optimizer_step`; partial batches run it eagerly.

    With `capture=False` (the CPU tests) everything but the graph is the same: the static index
    buffer, the tensor learning rate, gradients zeroed in place.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        grad_clip: float,
        features: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        capture: bool | None = None,
    ) -> None:
        super().__init__(model, loss_fn, optimizer, grad_clip, features, labels)
        device = features.device
        self.capture = device.type == "cuda" if capture is None else capture
        if self.capture and device.type != "cuda":
            raise ValueError(
                f"a CUDA graph needs a CUDA device, the training tensors are on {device}"
            )
        self.batch_size = batch_size
        self.static_index = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.steps_before_capture = WARMUP_STEPS
        self.captured = self.capture
        self.prepare_optimizer()

    def prepare_optimizer(self) -> None:
        """Learning rates as device tensors (the graph reads them; the schedule fills them) and a
        capturable AdamW. Called again after a checkpoint is loaded, which restores plain floats."""
        device = self.features.device
        for group in self.optimizer.param_groups:
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
            if self.capture:
                group["capturable"] = True
        if self.capture:
            # AdamW keeps its step counters on the parameters' device once capturable.
            for state in self.optimizer.state.values():
                if "step" in state:
                    state["step"] = state["step"].to(device=device, dtype=torch.float32)

    def __call__(self, index: torch.Tensor) -> None:
        if len(index) != self.batch_size:
            self._body(index)  # the epoch's last, partial batch
            return
        self.static_index.copy_(index)
        if not self.capture:
            self._body(self.static_index)
        elif self.graph is not None:
            self.graph.replay()
        elif self.steps_before_capture > 0:
            self._warm_up()
        else:
            self._capture()
            self.graph.replay()

    def _warm_up(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._body(self.static_index, grads_to_none=True)
        torch.cuda.current_stream().wait_stream(side)
        self.steps_before_capture -= 1

    def _capture(self) -> None:
        # Gradients are allocated inside the graph's memory pool and stay there: replays (and
        # the eager partial batches, which zero them in place) write into the same tensors.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._body(self.static_index, grads_to_none=False)
        self.graph = graph


def build_step(
    kind: str,
    model: nn.Module,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    grad_clip: float,
    features: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
) -> EagerStep:
    """`kind`: "auto" (captured on CUDA, eager elsewhere), "eager" or "captured"."""
    if kind not in STEP_KINDS:
        raise ValueError(f"step kind must be one of {STEP_KINDS}, got {kind!r}")
    on_cuda = features.device.type == "cuda"
    if kind == "captured" or (kind == "auto" and on_cuda):
        return CapturedStep(model, loss_fn, optimizer, grad_clip, features, labels, batch_size)
    return EagerStep(model, loss_fn, optimizer, grad_clip, features, labels)


STEP_KINDS = ("auto", "eager", "captured")
