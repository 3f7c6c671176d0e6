"""The runner worker process: ``celery -A mephisto_dist.celery.runner_worker worker -Q assignments -P threads
-c 100``. It hosts task scripts' TaskRunners, one thread per running assignment (``runners.assignments``).

Why threads: a runner is Mephisto's code, which blocks (``act(timeout)`` waits for a person for minutes)
and may call C extensions or start threads of its own; a thread per assignment is what Mephisto ran, costs
a stack and the runner's objects, and lets one process hold many waiting conversations. Prefork would
hold a process per conversation; gevent needs monkeypatching and a gevent-aware database driver and does
not yield inside C code. Celery cannot enforce time limits on threads, and a conversation has no fixed
length anyway: the runner's own ``act(timeout)`` bounds each wait, so this app sets none.
"""

from mephisto_dist.celery.app import make_celery
from mephisto_dist.queue import ASSIGNMENTS_QUEUE
from mephisto_dist.settings import load_settings

_settings = load_settings()
app = make_celery(_settings)
app.conf.update(task_soft_time_limit=None, task_time_limit=None, task_annotations=None,
                task_default_queue=ASSIGNMENTS_QUEUE,
                task_queues={ASSIGNMENTS_QUEUE: {"routing_key": ASSIGNMENTS_QUEUE}})

# Imported for its side effect: registers the runner task on ``app``.
from mephisto_dist.celery import assignment_tasks  # noqa: F401
