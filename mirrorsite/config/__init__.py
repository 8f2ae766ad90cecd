"""The mirror's settings: one schema of environment variables (schema.py), read once (loader.py),
shared by Django's settings and gunicorn's, and the source of the manual's table (reference.py)."""

from mirrorsite.config.loader import ConfigError, load
from mirrorsite.config.schema import Settings

__all__ = ["ConfigError", "Settings", "load"]
