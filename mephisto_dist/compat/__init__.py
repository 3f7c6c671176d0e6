"""The stand-in for the part of the ``mephisto`` package that task scripts import, and nothing else.

A Mephisto task folder's ``run_task.py`` imports ``mephisto.tools.scripts``, ``mephisto.operations...``
and friends. ``mephisto-dist`` runs that script unchanged with these modules standing in for them
(:mod:`.modules`, a registry of provided module names), in one of two modes (:mod:`.session`):

- launch: in the ``mephisto-dist run`` process, the script runs for real: ``build_custom_bundle`` builds
  the webapp, ``operator.launch_task_run`` creates the TaskRun, ``wait_for_runs_then_shutdown`` is the
  attached run's progress display (or returns at once under ``--detach``);
- capture: in every web and Celery worker process, the script runs again only to obtain its
  ``SharedTaskState`` callbacks (closures inside ``main`` included); it stops at ``launch_task_run``.

The modules are put in ``sys.modules`` only while a script runs, over a real Mephisto if one is
installed, and taken away again afterwards.
"""
