"""The latency-backend plug-in point: run a whole model or one resized layer on a device, so
:func:`autoprune.hardware.timing.time_many` can time it, and describe that device."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from autoprune.hardware.device import DeviceSpec, device_name, versions

if TYPE_CHECKING:
    from torch import nn

    from autoprune.prunable import ModuleGeometry

Runner = Callable[[], Any]


class LatencyBackend(ABC):
    """Executes models for timing on ``spec.device`` with ``spec.threads`` and ``spec.batch``.

    Implementations never move or modify a model they are given (they copy it when it must
    live elsewhere), and raise :class:`~autoprune.errors.ConfigError` from :meth:`check` when
    they cannot run here.
    """

    name: ClassVar[str] = "base"

    def __init__(self, spec: DeviceSpec) -> None:
        self.spec = spec
        self.check()

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise ``ConfigError`` if this backend cannot run ``self.spec`` on this machine."""

    @abstractmethod
    def model_runner(self, model: nn.Module, input_shape: tuple[int, ...]) -> Runner:
        """A zero-argument callable running ``model`` on one batch of ``input_shape``."""

    @abstractmethod
    def layer_runner(self, geometry: ModuleGeometry, c_in: int, c_out: int) -> Runner:
        """A zero-argument callable running one conv/linear layer of ``geometry`` resized to
        ``c_in`` → ``c_out`` channels (the profile's table entries)."""

    @property
    def default_round_to(self) -> int:
        """The default ``round_to``: 8 on GPUs (tensor-core tiles), 1 on CPUs. Measured on an
        AVX-512 CPU (benchmarks/results/channel_rounding.md): rounding a 3×3 conv's output
        channels down to a multiple of 16 saves a median 4 % (eager torch) to 13 % (ONNX Runtime)
        at ResNet-20's sizes and 11–15 % at ImageNet sizes, but a default of 16 would forbid
        pruning 16-channel layers at all; search ``search.round_to: [1, 8, 16]`` to let the
        search weigh it, or set ``round_to`` for wide models."""
        return 8 if self.spec.cuda else 1

    def synchronize(self) -> None:  # noqa: B027 - optional hook
        """Wait for work the runners started asynchronously (default: none)."""

    @contextmanager
    def session(self) -> Iterator[None]:
        """The scope timings run in (threads pinned, autograd off); restored afterwards."""
        yield

    def describe(self) -> dict[str, Any]:
        """The device and library versions, recorded with every number measured here."""
        return {
            "runtime": self.name,
            "device": self.spec.device,
            "device_name": device_name(self.spec.device),
            "threads": self.spec.threads,
            "batch": self.spec.batch,
            "versions": versions(),
        }


__all__ = ["LatencyBackend", "Runner"]
