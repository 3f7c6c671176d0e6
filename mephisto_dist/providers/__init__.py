"""Crowd providers: where units are published and workers come from.

A provider is a :class:`CrowdProvider`; ``mock`` publishes nothing and takes worker and assignment from
the page URL. The marketplace behind ``mturk`` cannot be reached from a test machine; it is driven
through boto3 behind this same contract.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mephisto_dist.errors import ConfigError


@dataclass(frozen=True)
class PublishedUnit:
    unit_id: int
    provider_unit_id: str


class CrowdProvider(Protocol):
    provider_type: str

    def publish_units(
        self, run_id: int, unit_ids: Sequence[int], server_url: str, task_args: Mapping[str, Any]
    ) -> list[PublishedUnit]:
        """Make units available to workers; idempotent for units already published."""
        ...

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        """Take units off the marketplace (expire HITs); idempotent."""
        ...

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        """The URL a worker opens, where the provider has such a thing (mock); else None."""
        ...


class MockProvider:
    """Publishes nothing: a worker opens ``<server>/?worker_id=W&assignment_id=A`` directly."""

    provider_type = "mock"

    def publish_units(
        self, run_id: int, unit_ids: Sequence[int], server_url: str, task_args: Mapping[str, Any]
    ) -> list[PublishedUnit]:
        return [PublishedUnit(unit_id, f"mock-{run_id}-{unit_id}") for unit_id in unit_ids]

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        return None

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        return f"{server_url.rstrip('/')}/?worker_id={worker_name}&assignment_id={assignment_ref}"


def make_provider(provider_type: str, provider_args: Mapping[str, Any] | None = None) -> CrowdProvider:
    if provider_type == "mock":
        return MockProvider()
    raise ConfigError(f"provider {provider_type!r} is not supported yet; supported: mock")
