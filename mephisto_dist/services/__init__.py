"""What the worker-facing server does, apart from HTTP: one function per request kind (register an agent,
take a submission, record metadata), each a few database transactions and the events enqueued after
them. ``web/`` parses requests, calls one of these, and maps their errors to statuses."""
