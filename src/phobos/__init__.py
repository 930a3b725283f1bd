"""phobos: a backup orchestrator for a home NAS."""

__version__ = "0.1.0"
