"""Offline API docs: Swagger UI at /docs and ReDoc at /redoc, from bundled assets."""
