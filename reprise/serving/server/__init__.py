"""The online inference server (`python -m reprise serve`, `make serve`): a FastAPI app scoring
JSON rows with the served model, MLflow's scoring protocol at /invocations, health and readiness
probes, and a hot switch of the model when the registry alias it follows moves.

app (the app and its endpoints), protocol (request bodies -> checked columns), guards (API key,
client host, content type, body size), refusals (refused requests as answers), state (the model
served now), scoring, observe (metrics and access logs), openapi, logs (uvicorn's log config),
settings, command (the `serve` command)."""

from reprise.serving.server.command import serve
from reprise.serving.server.settings import Settings

__all__ = ["Settings", "serve"]
