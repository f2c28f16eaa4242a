"""The operator's errors. Handlers map them to kopf's temporary/permanent errors at the edge."""

from __future__ import annotations


class OperatorError(Exception):
    """Base of the operator's own errors."""


class SettingsError(OperatorError, ValueError):
    """Invalid operator settings (flags or SCALESERVE_OPERATOR_* environment)."""


class InvalidSpecError(OperatorError):
    """The LLMEndpoint's spec cannot be served; retrying will not help until it changes."""


class ClusterError(OperatorError):
    """A Kubernetes API call failed in a way worth retrying."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ChildRejectedError(OperatorError):
    """The API server refused a child as the operator built it; retry after `delay_s`."""

    def __init__(self, message: str, delay_s: float) -> None:
        super().__init__(message)
        self.delay_s = delay_s


class StatsUnavailableError(OperatorError):
    """No gateway answered /stats; the concurrency sample is skipped."""
