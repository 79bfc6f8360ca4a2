"""Running git: the one way the platform calls it, with a timeout, and a failure as one line that
names the command and quotes git, credentials hidden."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reprise.credentials import scrub
from reprise.errors import RepriseError

TIMEOUT_S = 120


class GitError(RepriseError):
    """git failed, did not answer in time, or could not start; git's own output is kept for
    callers that say more (a rejected push, an unreachable server)."""

    def __init__(
        self,
        cause: str,
        *,
        stdout: str = "",
        stderr: str = "",
        timed_out: bool = False,
    ) -> None:
        super().__init__(cause, "see git's message.")
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out


def run(
    *args: str, cwd: Path | None = None, timeout: float = TIMEOUT_S, prompt: bool = True
) -> str:
    """git ``args`` in ``cwd``; its output, stripped. A failure is a GitError. With ``prompt``
    False, git never asks on the terminal (a pipeline would hang)."""
    result = _completed(args, cwd, timeout, prompt)
    if result.returncode != 0:
        said = result.stderr.strip() or result.stdout.strip()
        raise GitError(
            f"git {_shown(args)} failed in {cwd or Path.cwd()}: {scrub(said)}",
            stdout=result.stdout,
            stderr=result.stderr,
        )
    return result.stdout.strip()


def attempt(
    *args: str, cwd: Path | None = None, timeout: float = TIMEOUT_S, prompt: bool = True
) -> str | None:
    """git ``args`` in ``cwd``; its output, stripped, or None when git says no (an absent ref,
    no such remote). A timeout or a git that cannot start is still a GitError."""
    result = _completed(args, cwd, timeout, prompt)
    return result.stdout.strip() if result.returncode == 0 else None


def _completed(
    args: tuple[str, ...], cwd: Path | None, timeout: float, prompt: bool
) -> subprocess.CompletedProcess[str]:
    env = None
    if not prompt:
        # credentials come from git's credential helper, the user's GIT_ASKPASS or ~/.netrc;
        # "true" answers empty when none is set
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
        env.setdefault("GIT_ASKPASS", "true")
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise GitError(
            f"git {_shown(args)} did not answer within {timeout:g} s in {cwd or Path.cwd()}.",
            timed_out=True,
        ) from None
    except OSError as err:  # no git on PATH, or the folder is gone
        raise GitError(f"git {_shown(args)} cannot run in {cwd or Path.cwd()}: {err}.") from None


def _shown(args: tuple[str, ...]) -> str:
    """The command's arguments as a message shows them: a URI's credentials hidden."""
    return scrub(" ".join(args))
