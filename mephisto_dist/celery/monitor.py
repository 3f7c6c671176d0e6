"""The Celery app Flower watches: ``mephisto-dist flower`` runs ``celery -A mephisto_dist.celery.monitor
flower``. The deployment's broker, and nothing recorded into the machine's metrics folder: Flower's own
Prometheus metrics (``flower_events_total``, ``flower_task_runtime_seconds``, ...) stay in Flower's
process and are served at Flower's ``/metrics``, behind its login; the machine's listener serves ours
only."""

from mephisto_dist.celery.app import make_celery
from mephisto_dist.settings import load_settings

app = make_celery(load_settings(), record_metrics=False)
