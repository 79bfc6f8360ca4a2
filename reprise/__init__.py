"""Reprise: reproducible, releasable, deployable ML pipelines."""
