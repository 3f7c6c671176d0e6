"""Review and payment: decisions on submitted units and the provider calls (approve, reject, bonus) they
cause (:mod:`.decisions`), qualifications and blocks (:mod:`.qualifications`), and export (:mod:`.export`)."""
