"""The run-tag names through which steps, the orchestrator and the commands talk: one spelling of
the contract. The steps' side is components-repo/step_kit/step.py, a repository of its own that
keeps a copy (tests/unit/test_tags.py checks the two agree)."""

from __future__ import annotations

# Set by a step for each output (step_kit/step.py): where it is, its bytes' sha256, and a digest
# of what it holds (a table's rows, a model's predictions), by which releases are verified.
OUTPUT_PREFIX = "reprise.output."
OUTPUT_TAG = OUTPUT_PREFIX + "{name}"
OUTPUT_DIGEST_TAG = OUTPUT_TAG + ".sha256"
OUTPUT_CONTENT_TAG = OUTPUT_TAG + ".digest"
# The output through which the training step names the model version it registered.
REGISTERED_MODEL_TAG = OUTPUT_TAG.format(name="registered_model")
# The step's declared name, set on its run by the orchestrator (and by the step itself).
STEP_TAG = "reprise.step"
# The one-line cause of a failed step or pipeline, repeated by the command that ran it.
ERROR_TAG = "reprise.error"

# On a pipeline run: that it is one, its steps, and the release it reruns.
PIPELINE_TAG = "reprise.pipeline"
STEPS_TAG = "reprise.steps"
RELEASE_TAG = "reprise.release"

# Where a step's component came from, on the step's run: COMPONENT_TAG.format(key=...) for each
# key below; on the pipeline run, COMPONENT_TAG.format(key=f"{step}.sha").
COMPONENT_PREFIX = "reprise.component."
COMPONENT_TAG = COMPONENT_PREFIX + "{key}"
COMPONENT_PATH_TAG = COMPONENT_TAG.format(key="path")
COMPONENT_REPOSITORY_TAG = COMPONENT_TAG.format(key="repository")
COMPONENT_VERSION_TAG = COMPONENT_TAG.format(key="version")
COMPONENT_SHA_TAG = COMPONENT_TAG.format(key="sha")
COMPONENT_ENV_MANAGER_TAG = COMPONENT_TAG.format(key="env_manager")

# The step cache (reprise/cache.py): a finished run's key and its parts, and on a cache hit the
# run whose outputs it stands for.
CACHE_KEY_TAG = "reprise.cache.key"
CACHE_PARTS_TAG = "reprise.cache.parts"
CACHED_FROM_TAG = "reprise.cached_from"

# Who runs a run (reprise/owners.py): the host and process that started it, when, and the cause
# when a check of the store ended it because that process is gone.
OWNER_HOST_TAG = "reprise.owner.host"
OWNER_PID_TAG = "reprise.owner.pid"
OWNER_START_TAG = "reprise.owner.start"
KILLED_TAG = "reprise.killed"

# A sweep (reprise/sweep.py): its run, each point's overrides, and the best point it chose.
SWEEP_TAG = "reprise.sweep"
SWEEP_POINT_TAG = "reprise.sweep.point"
SWEEP_BEST_RUN_TAG = "reprise.sweep.best_run"
SWEEP_BEST_OVERRIDES_TAG = "reprise.sweep.best_overrides"
