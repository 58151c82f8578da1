"""Prefect tasks: thin wrappers over the plain functions in ``railyard``, ``model_registry``, ``infra`` and ``release``."""
