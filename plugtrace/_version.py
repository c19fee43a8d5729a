"""The package version, in one place (read by setuptools and by every module that stamps it)."""

__version__ = "0.1.0"
