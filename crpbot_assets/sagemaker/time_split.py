"""Where a training job's wall time goes: start-up, training, upload.

A SageMaker job reports its phases as SecondaryStatusTransitions (Starting, Downloading, Training,
Uploading, ...; each with a start and an end). Start-up is everything before the first epoch can
run (provisioning, the image, the data download): what a warm pool saves. The local trainer
measures the same three phases with its own clock (staging the inputs, the entry point, publishing
the model files).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# SageMaker's secondary statuses by phase (DescribeTrainingJob's SecondaryStatus values).
STARTUP_STATUSES = frozenset(
    {
        "Starting",
        "Pending",
        "LaunchingMLInstances",
        "PreparingTrainingStack",
        "Downloading",
        "DownloadingTrainingImage",
        "Restarting",
    }
)
TRAINING_STATUSES = frozenset({"Training"})
UPLOAD_STATUSES = frozenset({"Uploading"})


@dataclass(frozen=True)
class TimeSplit:
    startup_seconds: float
    training_seconds: float
    upload_seconds: float

    @classmethod
    def from_transitions(cls, transitions: Iterable[Mapping[str, Any]]) -> TimeSplit:
        """Seconds per phase from a job's SecondaryStatusTransitions; a transition without an
        EndTime (the status the job is still in, or a terminal one) counts nothing."""
        seconds = {"startup": 0.0, "training": 0.0, "upload": 0.0}
        for transition in transitions:
            start, end = transition.get("StartTime"), transition.get("EndTime")
            if start is None or end is None:
                continue
            status = transition.get("Status", "")
            phase = (
                "startup"
                if status in STARTUP_STATUSES
                else "training"
                if status in TRAINING_STATUSES
                else "upload"
                if status in UPLOAD_STATUSES
                else None
            )
            if phase is not None:
                seconds[phase] += max(0.0, (end - start).total_seconds())
        return cls(
            round(seconds["startup"], 3), round(seconds["training"], 3), round(seconds["upload"], 3)
        )

    def as_metadata(self) -> dict[str, float]:
        return {
            "startup_s": self.startup_seconds,
            "training_s": self.training_seconds,
            "upload_s": self.upload_seconds,
        }
