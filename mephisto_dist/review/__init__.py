"""Review and payment: decisions on submitted units and the provider calls (approve, reject, bonus) they
cause (:mod:`.decisions`), bulk decisions worked by Celery (:mod:`.batches`), qualifications and blocks
(:mod:`.qualifications`), what Mephisto's TaskReview client reads (:mod:`.taskreview`), and export
(:mod:`.export`)."""
