"""The ``inhouse`` provider: a lab's own annotators, no marketplace and no payment.

An annotator opens the task URL as Mephisto's inhouse provider names them: ``?worker_id=NAME&id=ASSIGNMENT``
(``worker_id`` is who they are, ``id`` a pseudo assignment id the page passes on). Publishing makes no
remote call; review, qualifications and blocks are kept by mephisto-dist alone, as for any provider, and
approving or paying a bonus moves no money (the lab pays its people itself): the ledger row is the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from mephisto_dist.errors import ConfigError
from mephisto_dist.providers import SubmittedWork, UnitLaunch

WORKER_PARAM = "worker_id"
ASSIGNMENT_PARAM = "id"  # Mephisto's inhouse wrap_crowd_source.js reads the pseudo assignment id from ``id``


class InhouseProvider:
    """The lab's own annotators reach the task URL directly; nothing to publish, pay or block remotely."""

    provider_type = "inhouse"
    is_marketplace = False
    is_sandbox = True  # no money moves through mephisto-dist
    fee_rate = 0.0
    overrides_rejections = True
    is_hit_based = False
    is_study_based = False
    syncs_qualifications = False
    publishes_instantly = True

    def __init__(self, ui_base_url: str | None = None) -> None:
        self.ui_base_url = ui_base_url

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> InhouseProvider:
        base = str(args.get("ui_base_url") or "") or None
        if base is not None:
            parts = urlsplit(base)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"mephisto.provider.ui_base_url={base!r} must be an http:// or https:// URL")
        return cls(base)

    def publish_unit(self, launch: UnitLaunch, server_url: str, task_args: Mapping[str, Any]) -> str:
        return f"inhouse-{launch.launch_id}"  # from the launch id alone: a re-sent launch gets the same

    def unpublish_units(self, provider_unit_ids: Sequence[str]) -> None:
        return None

    def unpublish_launches(self, launches: Sequence[UnitLaunch]) -> None:
        return None

    def worker_url(self, server_url: str, worker_name: str, assignment_ref: str) -> str | None:
        """The URL an annotator opens; ``ui_base_url`` when the page is reached at another address than the
        server's own (behind a proxy or in a container)."""
        base = (self.ui_base_url or server_url).rstrip("/")
        return f"{base}/?{urlencode({WORKER_PARAM: worker_name, ASSIGNMENT_PARAM: assignment_ref})}"

    # Nothing moves: the ledger row that asked for the call is the record of it.

    def approve_work(self, work: SubmittedWork, *, idempotency_key: str) -> str:
        return f"inhouse:{idempotency_key}"

    def reject_work(self, work: SubmittedWork, reason: str, *, idempotency_key: str) -> str:
        return f"inhouse:{idempotency_key}"

    def pay_bonus(self, work: SubmittedWork, amount: float, reason: str, *, idempotency_key: str) -> str:
        return f"inhouse:unpaid:{idempotency_key}"  # recorded for the lab to pay; nothing is sent anywhere

    def block_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        return f"inhouse:{idempotency_key}"

    def unblock_worker(self, worker_name: str, reason: str, *, idempotency_key: str) -> str:
        return f"inhouse:{idempotency_key}"
