"""Units per status over time (issue 22's plot on a run's page), derived from the units' timestamps: each
unit's path, the counts at sampled moments, and the plot on the review app's run page (in Chromium, with a
screenshot), refreshed with the rest of the live part."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from mephisto_dist.db.engine import make_sessionmaker, transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.domain.status import UnitStatus
from mephisto_dist.domain.unit_history import UnitTimes, status_history, unit_path
from mephisto_dist.review.decisions import Decision
from mephisto_dist.review.reviewing import decide_units
from mephisto_dist.review_app.history import HistoryCache
from mephisto_dist.work import claims
from mephisto_dist.work.claims import Registration
from tests.browser import wait_for
from tests.factories import make_run
from tests.test_review_app import SCREENSHOTS, review_app  # noqa: F401  (the app process, a fixture)
from tests.test_review_bundle import sign_in

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def times(status: UnitStatus, changed: float, *, launched: float | None = None, assigned: float | None = None,
          completed: float | None = None) -> UnitTimes:
    return UnitTimes(status, T0, None if launched is None else minutes(launched),
                     None if assigned is None else minutes(assigned), None if completed is None else minutes(completed),
                     minutes(changed))


def test_a_units_path_follows_its_timestamps() -> None:
    accepted = times(UnitStatus.ACCEPTED, 30, launched=1, assigned=5, completed=20)
    assert unit_path(accepted) == [(T0, UnitStatus.CREATED), (minutes(1), UnitStatus.LAUNCHED),
                                   (minutes(5), UnitStatus.ASSIGNED), (minutes(20), UnitStatus.COMPLETED),
                                   (minutes(30), UnitStatus.ACCEPTED)]
    # Handed back: assigned from its last assignment until it was handed back, launched since.
    returned = times(UnitStatus.LAUNCHED, 12, launched=1, assigned=5)
    assert unit_path(returned) == [(T0, UnitStatus.CREATED), (minutes(1), UnitStatus.LAUNCHED),
                                   (minutes(5), UnitStatus.ASSIGNED), (minutes(12), UnitStatus.LAUNCHED)]
    # Expired before anyone took it; a stamp later than its last change is not believed.
    expired = times(UnitStatus.EXPIRED, 8, launched=1, assigned=9)
    assert unit_path(expired) == [(T0, UnitStatus.CREATED), (minutes(1), UnitStatus.LAUNCHED),
                                  (minutes(8), UnitStatus.EXPIRED)]
    assert unit_path(times(UnitStatus.CREATED, 0)) == [(T0, UnitStatus.CREATED)]


def test_counts_at_each_moment_add_up_to_the_units() -> None:
    units = [times(UnitStatus.ACCEPTED, 30, launched=0, assigned=5, completed=20),
             times(UnitStatus.COMPLETED, 25, launched=0, assigned=10, completed=25),
             times(UnitStatus.LAUNCHED, 0, launched=0)]
    history = status_history(units, now=minutes(40), points=9)  # a sample every 5 minutes
    assert history.times[0] == T0 and history.times[-1] == minutes(40)
    counts = {status.value: list(values) for status, values in history.counts.items()}
    assert counts == {
        "launched": [3, 2, 1, 1, 1, 1, 1, 1, 1],
        "assigned": [0, 1, 2, 2, 1, 0, 0, 0, 0],
        "completed": [0, 0, 0, 0, 1, 2, 1, 1, 1],
        "accepted": [0, 0, 0, 0, 0, 0, 1, 1, 1],
    }
    assert history.peak == 3
    assert status_history([], now=T0).times == ()


def test_the_app_keeps_a_runs_history_and_derives_it_again_when_its_units_change(runtime: Any) -> None:
    run = make_run(runtime.sessions, assignments=3, task_name="kept-task")
    cache = HistoryCache(runtime)
    first = cache.history(run.run_id, now=datetime.now(UTC))
    assert first.counts[UnitStatus.LAUNCHED][-1] == 3
    reg = Registration.from_request({"provider_data": {"worker_name": "ann", "assignment_id": "a"}})
    with transaction(runtime.sessions) as session:
        assert claims.register_agent(session, run, reg, now=datetime.now(UTC)).agent_id
    # The page does not wait for the derivation: it shows the last one, and the next shows the change.
    cache.history(run.run_id, now=datetime.now(UTC))
    wait_for(lambda: cache.history(run.run_id, now=datetime.now(UTC)).counts.get(UnitStatus.ASSIGNED, (0,))[-1] == 1,
             10, "the history to be derived again")
    assert cache.history(run.run_id, now=datetime.now(UTC)).counts[UnitStatus.LAUNCHED][-1] == 2


@pytest.mark.system
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_run_page_plots_units_per_status_over_time(review_app: tuple[str, Engine],  # noqa: F811
                                                       browser: Any) -> None:
    url, engine = review_app
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=6, task_name="plotted-task")
    start = datetime.now(UTC)
    unit_ids = []
    for i, worker in enumerate(("ann", "bob", "cy", "dee")):
        reg = Registration.from_request({"provider_data": {"worker_name": worker, "assignment_id": f"a{i}"}})
        with transaction(factory) as session:
            details = claims.register_agent(session, run, reg, now=start + timedelta(minutes=2 * i))
            assert details.agent_id
            if i < 3:
                claims.submit_task(session, run, details.agent_id, {"answer": i}, now=start + timedelta(minutes=3 * i + 4))
            unit_ids.append(session.scalar(select(Unit.id).where(Unit.agent_id == details.agent_id)))
    decide_units(factory, Decision.APPROVE, unit_ids[:1], now=start + timedelta(minutes=12), note=None, bonus=None)

    page = browser.new_page()
    sign_in(page, url, f"/runs/{run.run_id}")
    plot = page.locator("#live figure.history")
    # Created at the first moment, then launched, assigned, completed, accepted.
    assert plot.locator("polygon").count() == 5
    caption = plot.inner_text()
    assert all(word in caption for word in ("created", "launched", "assigned", "completed", "accepted"))
    assert plot.locator("text").nth(0).text_content() == "6"  # the peak: every unit
    plot.screenshot(path=str(SCREENSHOTS / "history.png"))
    page.screenshot(path=str(SCREENSHOTS / "run-history.png"), full_page=True)

    # Live: a change shows without a reload.
    decide_units(factory, Decision.APPROVE, unit_ids[1:2], now=start + timedelta(minutes=13), note=None, bonus=None)
    accepted = page.locator("#live figure.history polygon.s-accepted title")
    wait_for(lambda: (accepted.text_content() or "").startswith("accepted: now 2"), 15,
             "the plot to show the second approval")
