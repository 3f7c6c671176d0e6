"""One behavioural suite for the CrowdProvider contract, run against every provider: ``mock``, ``inhouse``,
``mturk`` and ``mturk_sandbox`` against a real ``mephisto-dist mturk-local`` process reached over HTTP
with unchanged boto3 code, and ``prolific`` against a real ``mephisto-dist prolific-local`` process. What a worker does on the marketplace (accept, submit) is each harness's
``submit``; everything else is asked of the contract alone.

The capabilities a provider declares are checked against what it does: a HIT-based provider reports
which HITs nobody holds, one that syncs qualifications can grant and revoke them, a marketplace hands
out no URL of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx
import pytest

from mephisto_dist.errors import ConfigError, ProviderError
from mephisto_dist.providers import (
    CrowdProvider,
    SubmittedWork,
    UnitLaunch,
    make_provider,
    provider_class,
    provider_types,
)
from mephisto_dist.runs.returns import ReportsHolds
from tests.mturk_local_process import FAKE_KEY_ID, FAKE_SECRET, mturk_local
from tests.prolific_local_process import FAKE_TOKEN, come_back, params_of, prolific_local, take_part

SERVER_URL = "http://127.0.0.1:3000"  # mturk-local opens a loopback task URL over HTTP, as a rehearsal
TASK_ARGS = {"task_title": "Rate a sentence", "task_description": "Read one sentence and rate it",
             "task_reward": 0.25, "task_tags": "rating,text", "task_lifetime_in_seconds": 3600,
             "assignment_duration_in_seconds": 600}
EXPECTED = {  # the capabilities each provider declares
    "mock": {"is_marketplace": False, "is_sandbox": True, "is_hit_based": False, "syncs_qualifications": False,
             "overrides_rejections": True},
    "inhouse": {"is_marketplace": False, "is_sandbox": True, "is_hit_based": False, "syncs_qualifications": False,
                "overrides_rejections": True},
    "mturk": {"is_marketplace": True, "is_sandbox": False, "is_hit_based": True, "syncs_qualifications": True,
              "overrides_rejections": True},
    "mturk_sandbox": {"is_marketplace": True, "is_sandbox": True, "is_hit_based": True,
                      "syncs_qualifications": True, "overrides_rejections": True},
    "prolific": {"is_marketplace": True, "is_sandbox": False, "is_hit_based": False, "is_study_based": True,
                 "syncs_qualifications": False,
                 "overrides_rejections": False},
}


@runtime_checkable
class SyncsQualifications(Protocol):
    def grant_qualification(self, worker_name: str, qualification_name: str, value: int) -> str: ...

    def revoke_qualification(self, worker_name: str, qualification_name: str, reason: str) -> str: ...


@dataclass
class Crowd:
    provider: CrowdProvider
    submit: Callable[[str, str], SubmittedWork]
    """A worker takes the published unit and submits it: (provider unit id, worker name) -> the work."""
    take: Callable[[str, str], None]
    """A worker takes the published unit and keeps it."""


@pytest.fixture(scope="module")
def turk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("provider-contract")
    with pytest.MonkeyPatch.context() as patch:
        # The standard AWS environment, as a requester registered without a profile uses.
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-credentials"))
        patch.setenv("AWS_CONFIG_FILE", str(directory / "no-config"))
        patch.delenv("AWS_PROFILE", raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
        patch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        with mturk_local(directory / "turk.sqlite3", directory / "turk.log") as url:
            yield url


def _mturk_crowd(name: str, turk: str) -> Crowd:
    provider = make_provider(name, {"requester_name": "lab", "endpoint_url": turk,
                                    "deployment": f"contract-{uuid.uuid4().hex[:8]}"})

    def take_assignment(hit_id: str, worker: str) -> str:
        taken = httpx.post(f"{turk}/api/hits/{hit_id}/accept", json={"workerId": worker})
        assert taken.status_code == 200, taken.text
        return str(taken.json()["AssignmentId"])

    def submit(hit_id: str, worker: str) -> SubmittedWork:
        assignment_id = take_assignment(hit_id, worker)
        sent = httpx.post(f"{turk}/mturk/externalSubmit", data={"assignmentId": assignment_id, "rating": "4"},
                          headers={"accept": "application/json"})
        assert sent.status_code == 200, sent.text
        return SubmittedWork(worker, hit_id, {"assignment_id": assignment_id, "hit_id": hit_id})

    def take(hit_id: str, worker: str) -> None:
        take_assignment(hit_id, worker)

    return Crowd(provider, submit, take)


@pytest.fixture(scope="module")
def prolific(tmp_path_factory: pytest.TempPathFactory, redis_server: str) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("provider-contract-prolific")
    keys = directory / "prolific-credentials"
    keys.write_text(json.dumps({"lab": FAKE_TOKEN}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROLIFIC_CREDENTIALS_FILE", str(keys))
        # The deployment's Redis, where the provider takes a study's places lock (providers.prolific.places).
        patch.setenv("MEPHISTO_DIST_REDIS_URL", redis_server)
        with prolific_local(directory / "prolific.sqlite3", directory / "prolific.log") as url:
            yield url


def _prolific_crowd(prolific: str) -> Crowd:
    provider = make_provider("prolific", {"requester_name": "lab", "endpoint_url": prolific,
                                          "deployment": f"contract-{uuid.uuid4().hex[:8]}"})

    def take(unit: str, worker: str) -> dict[str, str]:
        return params_of(str(take_part(prolific, unit.split(":")[0], worker)["url"]))

    def submit(unit: str, worker: str) -> SubmittedWork:
        opened = take(unit, worker)
        come_back(opened["complete_url"], worker)
        return SubmittedWork(worker, unit, {"assignment_id": opened["submission_id"],
                                            "prolific_study_id": opened["study_id"]})

    def hold(unit: str, worker: str) -> None:
        take(unit, worker)

    return Crowd(provider, submit, hold)


LOCAL_CROWDS = ("inhouse", "mock")  # nothing to reach: the worker opens the task URL


@pytest.fixture(params=[name if name in LOCAL_CROWDS else pytest.param(name, marks=pytest.mark.system)
                        for name in sorted(EXPECTED)])  # mturk: a real mturk-local process
def crowd(request: pytest.FixtureRequest) -> Crowd:
    name = str(request.param)
    if name in LOCAL_CROWDS:
        return Crowd(make_provider(name), lambda unit, worker: SubmittedWork(worker, unit, {}),
                     lambda unit, worker: None)
    if name == "prolific":
        return _prolific_crowd(str(request.getfixturevalue("prolific")))
    return _mturk_crowd(name, str(request.getfixturevalue("turk")))


def _launch(unit_id: int | None = None) -> UnitLaunch:
    unit = unit_id if unit_id is not None else uuid.uuid4().int % 1_000_000
    return UnitLaunch(run_id=1, unit_id=unit, launch_id=f"launch-{uuid.uuid4().hex}")


def _worker() -> str:
    return f"A{uuid.uuid4().hex[:12].upper()}"


def test_every_implemented_provider_is_in_the_suite() -> None:
    assert set(provider_types()) == set(EXPECTED)
    # The registry names where each lives; each class answers to the name it is registered under.
    assert {name: provider_class(name).provider_type for name in provider_types()} == {name: name for name in EXPECTED}


def test_the_registry_finds_the_provider_and_its_capabilities_by_name(crowd: Crowd) -> None:
    provider = crowd.provider
    name = provider.provider_type
    assert type(provider) is provider_class(name)
    assert name in provider_types()
    declared = {capability: getattr(provider_class(name), capability) for capability in EXPECTED[name]}
    assert declared == EXPECTED[name]
    assert {capability: getattr(provider, capability) for capability in EXPECTED[name]} == declared
    assert isinstance(provider.publishes_instantly, bool)
    assert name in provider_types(lambda cls: cls.is_hit_based) or not provider.is_hit_based


def test_capabilities_match_what_the_provider_can_do(crowd: Crowd) -> None:
    provider = crowd.provider
    assert isinstance(provider, ReportsHolds) == provider.is_hit_based
    assert isinstance(provider, SyncsQualifications) == provider.syncs_qualifications
    url = provider.worker_url(SERVER_URL, "W1", "7")
    # A marketplace sends its workers to the task itself; a stand-in crowd is reached at a URL.
    assert (url is None) == provider.is_marketplace
    if url is not None:
        assert url.startswith(SERVER_URL) and "W1" in url
    if provider.is_marketplace:
        assert not provider.publishes_instantly  # a publish is a remote call, through the rate bucket


def test_a_resent_launch_publishes_nothing_new(crowd: Crowd) -> None:
    launch = _launch()
    first = crowd.provider.publish_unit(launch, SERVER_URL, TASK_ARGS)
    assert first
    assert crowd.provider.publish_unit(launch, SERVER_URL, TASK_ARGS) == first
    other = crowd.provider.publish_unit(_launch(launch.unit_id), SERVER_URL, TASK_ARGS)
    assert other and other != first


def test_unpublishing_is_idempotent_and_a_launch_that_published_nothing_is_no_error(crowd: Crowd) -> None:
    published = crowd.provider.publish_unit(_launch(), SERVER_URL, TASK_ARGS)
    crowd.provider.unpublish_units([published])
    crowd.provider.unpublish_units([published])
    crowd.provider.unpublish_launches([_launch()])
    crowd.provider.unpublish_units([])


def test_a_hit_based_provider_reports_which_published_units_nobody_holds(crowd: Crowd) -> None:
    provider = crowd.provider
    if not isinstance(provider, ReportsHolds):
        # Nothing to report: then the provider must not claim to publish HITs.
        assert not provider.is_hit_based, f"{provider.provider_type} is HIT-based but cannot report holds"
        return
    free, held = (crowd.provider.publish_unit(_launch(), SERVER_URL, TASK_ARGS) for _ in range(2))
    crowd.take(held, _worker())
    assert provider.hits_not_held([free, held]) == [free]


def test_submitted_work_is_paid_once_and_a_rejection_can_be_overridden(crowd: Crowd) -> None:
    provider = crowd.provider
    paid = crowd.submit(provider.publish_unit(_launch(), SERVER_URL, TASK_ARGS), _worker())
    key = uuid.uuid4().hex
    assert provider.approve_work(paid, idempotency_key=f"approve-{key}")
    assert provider.approve_work(paid, idempotency_key=f"approve-{key}")  # a re-delivered approval
    assert provider.pay_bonus(paid, 0.5, "well done", idempotency_key=f"bonus-{key}")
    assert provider.pay_bonus(paid, 0.5, "well done", idempotency_key=f"bonus-{key}")  # never twice

    refused = crowd.submit(provider.publish_unit(_launch(), SERVER_URL, TASK_ARGS), _worker())
    assert provider.reject_work(refused, "not what was asked", idempotency_key=f"reject-{key}")
    assert provider.reject_work(refused, "not what was asked", idempotency_key=f"reject-{key}")
    if provider.overrides_rejections:
        assert provider.approve_work(refused, idempotency_key=f"override-{key}")  # rejected -> accepted
    else:
        with pytest.raises(ProviderError, match="REJECTED"):  # final there: said, never silently dropped
            provider.approve_work(refused, idempotency_key=f"override-{key}")


def test_a_worker_can_be_blocked_and_unblocked(crowd: Crowd) -> None:
    worker = _worker()
    assert crowd.provider.block_worker(worker, "spam", idempotency_key=f"block-{worker}")
    assert crowd.provider.unblock_worker(worker, "a mistake", idempotency_key=f"unblock-{worker}")


def test_qualifications_reach_a_provider_that_keeps_them(crowd: Crowd) -> None:
    provider = crowd.provider
    if not isinstance(provider, SyncsQualifications):
        assert not provider.syncs_qualifications, f"{provider.provider_type} claims to sync qualifications"
        return
    worker, name = _worker(), f"contract-{uuid.uuid4().hex[:8]}"
    assert provider.grant_qualification(worker, name, 3)
    assert provider.revoke_qualification(worker, name, "no longer")
    assert provider.revoke_qualification(worker, name, "again")  # revoking what is gone is no error


def test_the_inhouse_url_names_the_annotator_as_mephisto_does() -> None:
    provider = make_provider("inhouse")
    assert provider.worker_url(SERVER_URL, "ann", "3") == f"{SERVER_URL}/?worker_id=ann&id=3"
    behind_proxy = make_provider("inhouse", {"ui_base_url": "https://lab.example.org/task/"})
    assert behind_proxy.worker_url(SERVER_URL, "ann b", "3") == "https://lab.example.org/task/?worker_id=ann+b&id=3"
    with pytest.raises(ConfigError, match="ui_base_url"):
        make_provider("inhouse", {"ui_base_url": "lab.example.org"})


def test_an_unknown_provider_is_a_config_error_naming_the_implemented_ones() -> None:
    with pytest.raises(ConfigError, match="implemented: mock, mturk, mturk_sandbox, prolific, inhouse"):
        provider_class("toloka")
