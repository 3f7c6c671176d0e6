"""The review app (``mephisto-dist review-app``): a researcher's pages to watch runs and to review, pay and
block workers, and Mephisto's TaskReview JSON API and client, over the same use cases and ledger as the
``review`` commands. A face, like ``web``."""
