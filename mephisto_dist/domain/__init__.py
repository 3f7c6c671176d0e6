"""Pure domain logic: status machines and decisions, with no I/O imports."""
