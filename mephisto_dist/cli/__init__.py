"""The ``mephisto-dist`` command: thin Typer commands over the library; domain errors become one-line
messages and exit codes here and nowhere else."""
