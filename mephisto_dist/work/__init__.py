"""A worker's way to a unit, apart from HTTP: registering an agent (:mod:`.registration`) and claiming a
unit for it through the gate (:mod:`.claims`: blocks, qualifications, onboarding, screening, golds,
per-worker limits, the task's ``worker_can_do_unit``), taking a submission and its uploads
(:mod:`.submissions`, :mod:`.uploads`), and the run a web process serves (:mod:`.served`). ``web/`` parses a
request, calls one function here, and maps its errors to statuses."""
