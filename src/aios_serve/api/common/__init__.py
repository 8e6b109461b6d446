"""Shared protocol pieces and the serving pipeline."""
