"""Test-only stand-in for ParlAI (see tests/parlai_standin/README.md)."""

__version__ = "0.0.0+mephisto-dist-test-standin"
