"""Importing what Mephisto collected: a Mephisto data directory (its SQLite database and the run folders
beside it, in Mephisto 1.1's schema or the current one) read into this deployment's database and storage.

``mephisto_data`` reads the directory (and only reads it); ``importing`` writes what it read, in one
transaction, as closed runs (``mephisto-dist import-mephisto``).
"""
