"""Hosted TaskRunners: a task script's own TaskRunner run per assignment by a runner worker (a Celery
worker on the ``assignments`` queue, threads pool), once every unit of the assignment is claimed
(:mod:`.host`), talking to the agents' pages through their Redis inboxes and the live channel
(:mod:`.channel`)."""
