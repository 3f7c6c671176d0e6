"""A run's arguments in MTurk's shapes: the HIT type, the ExternalQuestion, the RequesterAnnotation that
marks our HITs, Mephisto's qualification dicts as QualificationRequirements, and request tokens. Pure."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from mephisto_dist.domain.qualifications import Comparator, Requirement
from mephisto_dist.errors import ConfigError

ANNOTATION_PREFIX = "mephisto-dist"
DEFAULT_AUTO_APPROVE_DELAY_S = 5 * 24 * 3600  # Mephisto's default
MAX_TOKEN_CHARS = 64
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
EXTERNAL_QUESTION_NS = "http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/2006-07-14/ExternalQuestion.xsd"
_ANNOTATION = re.compile(rf"{ANNOTATION_PREFIX} deployment=(\S+) run=(\d+) unit=(\d+)(?: launch=(\S+))?")


@dataclass(frozen=True)
class HitMark:
    deployment: str
    run_id: int
    unit_id: int
    launch_id: str | None = None


def annotation(deployment: str, run_id: int, unit_id: int, launch_id: str | None = None) -> str:
    """Our mark on every HIT we create: which deployment, run and unit it belongs to, and the launch that
    made it (so a launch whose sender died can be found and taken down)."""
    mark = f"{ANNOTATION_PREFIX} deployment={deployment} run={run_id} unit={unit_id}"
    return f"{mark} launch={launch_id}" if launch_id else mark


def parse_annotation(text: str | None) -> HitMark | None:
    """The mark of a HIT we created, or None for a HIT another tool made."""
    found = _ANNOTATION.fullmatch(text or "")
    if found is None:
        return None
    return HitMark(found.group(1), int(found.group(2)), int(found.group(3)), found.group(4))


def request_token(key: str) -> str:
    """An idempotency key as a UniqueRequestToken (at most 64 characters; longer keys are hashed)."""
    return key if len(key) <= MAX_TOKEN_CHARS else hashlib.sha256(key.encode()).hexdigest()


def amount(dollars: float) -> str:
    return f"{dollars:.2f}"


def hit_type(task_args: Mapping[str, Any], requirements: list[dict[str, Any]]) -> dict[str, Any]:
    """CreateHITType's arguments from the run's ``mephisto.task`` arguments."""
    params: dict[str, Any] = {
        "Title": str(task_args["task_title"]),
        "Description": str(task_args["task_description"]),
        "Reward": amount(float(task_args["task_reward"])),
        "AssignmentDurationInSeconds": int(task_args.get("assignment_duration_in_seconds") or 30 * 60),
        "AutoApprovalDelayInSeconds": int(task_args.get("auto_approve_delay") or DEFAULT_AUTO_APPROVE_DELAY_S),
        "QualificationRequirements": requirements,
    }
    keywords = ",".join(tag.strip() for tag in str(task_args.get("task_tags") or "").split(",") if tag.strip())
    if keywords:
        params["Keywords"] = keywords
    return params


def lifetime_s(task_args: Mapping[str, Any]) -> int:
    """Mephisto's ``task_lifetime_in_seconds``: how long each HIT stays up."""
    return int(task_args.get("task_lifetime_in_seconds") or 31 * 24 * 3600)


def external_question(server_url: str) -> str:
    """The ExternalQuestion opening the run's page; MTurk requires HTTPS (a loopback address may use HTTP
    for a rehearsal on mturk-local)."""
    parts = urlsplit(server_url)
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)):
        raise ConfigError(f"MTurk opens the task at the run's public URL, which must be https://; the run's "
                          f"server is at {server_url!r}")
    url = server_url if parts.path else server_url + "/"
    # FrameHeight 0 lets the task take the worker's whole window, as Mephisto's HITs do.
    return (f'<ExternalQuestion xmlns="{EXTERNAL_QUESTION_NS}"><ExternalURL>{escape(url)}</ExternalURL>'
            "<FrameHeight>0</FrameHeight></ExternalQuestion>")


def applicable(raw: Iterable[Mapping[str, Any]], provider_type: str) -> list[Requirement]:
    """Mephisto's qualification dicts that apply on this provider."""
    parsed = [Requirement.from_dict(item) for item in raw]
    return [r for r in parsed if r.applicable_providers is None or provider_type in r.applicable_providers]


def qualification_requirements(
    requirements: Iterable[Requirement], type_ids: Mapping[str, str], block_type_id: str | None,
) -> list[dict[str, Any]]:
    """QualificationRequirements for the HIT type: each requirement on the MTurk type of its name, and the
    block qualification as DoesNotExist guarding discovery, preview and accept (Mephisto's choice)."""
    mapped: list[dict[str, Any]] = []
    for requirement in requirements:
        item: dict[str, Any] = {"QualificationTypeId": type_ids[requirement.qualification_name],
                                "Comparator": requirement.comparator.value, "ActionsGuarded": "Accept"}
        if isinstance(requirement.value, tuple):
            item["IntegerValues"] = list(requirement.value)
        elif requirement.value is not None:
            item["IntegerValues"] = [requirement.value]
        mapped.append(item)
    if block_type_id is not None:
        mapped.append({"QualificationTypeId": block_type_id, "Comparator": Comparator.DOES_NOT_EXIST.value,
                       "ActionsGuarded": "DiscoverPreviewAndAccept"})
    return mapped
