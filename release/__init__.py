"""The release path as plain functions, below the Prefect tasks and flows that drive it: where the
release state lives and how it changes (``state``), what a verdict does to a version
(``verdicts``), its reconciliation (``reconcile``), the reviewer's answer (``decision``), the
Prefect runs that wait for it (``review_runs``) and the canary's share of live traffic
(``traffic``). The rules these apply: ``model_registry.release_rules``."""
