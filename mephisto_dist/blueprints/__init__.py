"""Blueprints: what a task shows workers and what it needs from its files (Mephisto's task logic).

``static_task`` (:mod:`.static_task`): templated HTML pages filled from CSV/JSON data rows.
"""
