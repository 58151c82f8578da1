"""The ``railyard`` console script, above every package it drives."""
