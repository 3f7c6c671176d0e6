"""The worker-facing routes, one module per group. Each module's ``ROUTES`` is a list of Starlette
routes whose handlers parse the request, call one function of ``mephisto_dist.work`` and answer;
``web.app`` lists the groups in order."""
