"""Error types: every user mistake raises one of these, and the CLI turns it into one line."""

from __future__ import annotations


class AutopruneError(Exception):
    """Root of all errors autoprune raises for bad input or failed work."""


class ConfigError(AutopruneError):
    """A YAML config, CLI option or model/dataset name is invalid."""


class PolicyError(AutopruneError):
    """A pruning policy does not fit the model or breaks its bounds."""


class InfeasibleBudgetError(AutopruneError):
    """The latency budget cannot be met even at the maximal pruning allowed."""


class ProfileError(AutopruneError):
    """A hardware profile is missing, malformed, or recorded for another setting."""


class CheckpointError(AutopruneError):
    """A checkpoint is missing, corrupt, unsafe, or does not fit the model."""


class DataError(AutopruneError):
    """A dataset is missing, empty or malformed."""


class EvaluationError(AutopruneError):
    """Pruning, fine-tuning or scoring a candidate failed."""


class RunLockedError(AutopruneError):
    """Another search holds the run directory."""


class MemorizedValidationWarning(UserWarning):
    """The validation split was carved from train, which a pretrained checkpoint may have seen."""
