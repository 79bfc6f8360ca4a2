"""The model a server process serves now, loaded after start and switched as one reference when
the registry alias it follows moves."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from reprise.errors import RepriseError
from reprise.serving import metrics
from reprise.serving import model as served_model
from reprise.serving.model import ServedModel
from reprise.serving.reference import ModelReference

log = logging.getLogger(__name__)

# Retry a failed first load this often (the registry or its artifacts may be back soon).
RETRY_SECONDS = 5.0


class ServingState:
    """The model served now, swapped as one reference when the followed alias moves."""

    def __init__(self, reference: ModelReference, poll_seconds: float) -> None:
        self.reference = reference
        self.poll_seconds = poll_seconds
        self.served: ServedModel | None = None
        self.problem = f"loading {reference}"  # why the server is not ready, or the last failure
        self.lock = asyncio.Lock()

    @property
    def polling(self) -> bool:
        return self.reference.alias is not None and self.poll_seconds > 0

    def _load_if_changed(self) -> ServedModel | None:
        """The model the reference points to now, loaded in full; None when it is served."""
        current = self.served
        if current is None:
            return _frozen(served_model.load(*self.reference.resolve()))
        if self.reference.alias is None:
            return None
        name, alias = self.reference.alias
        try:
            uri, meta = self.reference.resolve()
        except RepriseError as err:
            raise RepriseError(
                f"The registry has no version of '{name}' aliased '{alias}' now "
                f"({err.cause}); version {current.version} is still served.",
                "alias a version again: make promote VERSION=X.Y.Z.",
            ) from None
        if meta.get("version") == current.version:
            return None
        return _frozen(served_model.load(uri, meta))

    async def refresh(self) -> bool:
        """Load what the reference points to if it is not the served model; True on a switch."""
        async with self.lock:
            try:
                new = await asyncio.to_thread(self._load_if_changed)
            except Exception as err:  # the registry or store may be down: keep serving
                line = str(err).splitlines()[0] if str(err) else type(err).__name__
                if line != self.problem:
                    log.warning("%s", line)
                self.problem = line
                metrics.RELOADS.labels("failed").inc()
                raise
            if self.problem and self.served is not None:
                log.info("the registry answers again; version %s is served", self.served.version)
            self.problem = ""
            if new is None:
                metrics.RELOADS.labels("unchanged").inc()
                return False
            old, self.served = self.served, new  # one reference: requests in flight keep `old`
            metrics.RELOADS.labels("switched").inc()
            metrics.serving(new.name, new.version, new.uri)
            if old is None:
                log.info(
                    "serving %s: %s (version %s, threshold %.4f, fast path %s)",
                    self.reference,
                    new.uri,
                    new.version,
                    new.threshold,
                    "on" if new.scorer is not None else "off",
                )
            else:
                log.info(
                    "%s moved: now serving %s (was version %s)",
                    self.reference,
                    new.uri,
                    old.version,
                )
            return True

    async def keep_current(self) -> None:
        """Load the model, then follow the alias every poll_seconds while there is one."""
        while True:
            with contextlib.suppress(Exception):  # refresh logged it; try again later
                await self.refresh()
            if self.served is not None and not self.polling:
                return
            await asyncio.sleep(self.poll_seconds if self.served is not None else RETRY_SECONDS)


def _frozen(served: ServedModel) -> ServedModel:
    """``served``, with every object alive now (the model, MLflow and its imports) kept out of
    the garbage collector's later passes: a request that builds many containers wakes the
    collector, and a pass over this heap stalls the event loop (0.8 s for a 1 MiB body of []s).
    """
    gc.collect()
    gc.freeze()
    return served
