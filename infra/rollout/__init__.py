"""Release policy on the serving side: materialize a stored version, move the labels, smoke-test."""
