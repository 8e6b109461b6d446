"""Usage accounting: one record per request that reached a model, stored in SQLite, aggregated."""

from aios_serve.usage.records import UsageRecord, api_type_of
from aios_serve.usage.store import UsageStore, default_store_path

__all__ = ["UsageRecord", "UsageStore", "api_type_of", "default_store_path"]
