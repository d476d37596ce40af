"""HEPS delivery: build, test, push and pin the analysis platform's images."""

__version__ = "0.1.0"
