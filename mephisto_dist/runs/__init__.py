"""A TaskRun's life: turning a task folder into a run (:mod:`.preparation`, :mod:`.bundles`), its rows and
progress (:mod:`.task_runs`), launching and expiring its units on the provider (:mod:`.launches`), stopping,
resuming and timing out (:mod:`.lifecycle`), and units handed back after a return (:mod:`.returns`)."""
