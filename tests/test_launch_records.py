"""Recording launches (``db.transitions.record_launched``): a batch moves exactly the units still created
and owned by their launch, as one launch at a time does, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from mephisto_dist.db.engine import make_sessionmaker, read_transaction, transaction
from mephisto_dist.db.models import Unit
from mephisto_dist.db.transitions import record_launched
from mephisto_dist.domain.status import UnitStatus
from tests.factories import make_run, now


def test_a_batch_moves_only_the_units_its_launches_still_own(engine: Engine) -> None:
    factory = make_sessionmaker(engine)
    run = make_run(factory, assignments=5, launch=False)
    with transaction(factory) as session:
        ids = list(session.scalars(select(Unit.id).where(Unit.task_run_id == run.run_id).order_by(Unit.id)))
        for unit_id in ids:
            session.execute(update(Unit).where(Unit.id == unit_id).values(launch_id=f"launch-{unit_id}"))
        # Unit 3's launch was withdrawn and the unit bound to another; unit 4 expired meanwhile.
        session.execute(update(Unit).where(Unit.id == ids[2]).values(launch_id="another-launch"))
        session.execute(update(Unit).where(Unit.id == ids[3]).values(status=UnitStatus.EXPIRED.value))
    batch = [(unit_id, f"launch-{unit_id}", f"hit-{unit_id}") for unit_id in ids[:4]]
    with transaction(factory) as session:
        moved = record_launched(session, batch, now=now())
    assert moved == [ids[0], ids[1]]
    with transaction(factory) as session:  # the same launches recorded again (a re-send) move nothing
        assert record_launched(session, batch, now=now()) == []
        assert record_launched(session, [(ids[4], f"launch-{ids[4]}", "hit-one")], now=now()) == [ids[4]]
    with read_transaction(factory) as session:
        rows = {unit.id: unit for unit in session.scalars(select(Unit).where(Unit.id.in_(ids)))}
    assert [rows[i].status for i in ids] == [UnitStatus.LAUNCHED.value, UnitStatus.LAUNCHED.value,
                                            UnitStatus.CREATED.value, UnitStatus.EXPIRED.value,
                                            UnitStatus.LAUNCHED.value]
    assert [rows[i].provider_unit_id for i in ids] == [f"hit-{ids[0]}", f"hit-{ids[1]}", None, None, "hit-one"]
    assert rows[ids[0]].launched_at is not None and rows[ids[2]].launched_at is None
