"""TaskRunner events run on the Celery workers (:mod:`.events`: unit assigned, unit submitted, remote
calls), the live channel between a page and the deployment (:mod:`.live`), and the requests that channel
carries apart from the websocket itself (:mod:`.channel`)."""
