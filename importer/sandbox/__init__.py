"""A local, faithful Instasent Ingest API for rehearsals, tests and benchmarks.

- :mod:`importer.sandbox.app` — ``create_app(settings, clock=, sleep=)``: the ASGI app
  (routing, auth, rate limit, faults, endpoints) with ``stats()``, ``set_faults()``,
  ``reset()``, ``get_contact()``, ``events()`` for Python callers;
- :mod:`importer.sandbox.server` — ``serve()`` (blocking, the CLI) and
  ``running_sandbox()`` (a background uvicorn on a free loopback port);
- :mod:`importer.sandbox.validation` — per-item rules built from :mod:`.specs`;
- :mod:`importer.sandbox.store` — in-memory dicts or SQLite (``--db``);
- :mod:`importer.sandbox.ratelimit`, :mod:`.faults`, :mod:`.stats`, :mod:`.hooks`,
  :mod:`.responses` — one concern each.

Nothing is imported here, so ``importer.sandbox.settings`` stays cheap for the CLI.
"""
