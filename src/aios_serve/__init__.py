"""aios-serve: a self-hosted server for the AIOS API."""

__version__ = "0.1.0"
