"""Beat's reconcilers that keep the outside world (servers, later the crowd provider's HITs) in line with
the database. Each locks a batch (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock, taken at
``BEGIN``), decides with a pure function of the snapshot and ``now`` (``domain``), claims its work with a
compare-and-set, and only then calls the outside world, so two running at once do the work once. What each
found and did is written to ``reconcile_record`` (``records``)."""
