"""The online feature store: per-user and per-movie aggregates in Valkey/Redis, kept fresh by
an event stream (``store``, ``stream``), and the embedded Valkey server (``server``)."""
