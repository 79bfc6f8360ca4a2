"""Serving a model: the fast scorer, model loading, the REST server and batch scoring."""
