"""Credentials in URIs: hide them in messages (redact, scrub), strip them from what is recorded
(tags, config, manifests), and refuse them where a run would record them in clear."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from typing import Any

from reprise.errors import RepriseError

# Schemes whose user name is a login, not a secret: ssh needs it (git@host) to authenticate.
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# A URI anywhere in a text: a scheme, "://", then anything up to a space or a quote.
_URI_IN_TEXT = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s'"]+""")


def _secret_userinfo(parts: urllib.parse.SplitResult) -> bool:
    """True if the URI's user info holds a secret: a password, or (but for ssh) a user name,
    which many servers take as a token."""
    if parts.password is not None:
        return True
    return parts.username is not None and parts.scheme.lower() not in _SSH_SCHEMES


def _with_userinfo(uri: str, userinfo: str) -> str:
    """``uri`` with ``userinfo`` in place of its own; every other character as it was."""
    scheme, sep, rest = uri.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host = rest[:end].rpartition("@")[2]
    return f"{scheme}{sep}{userinfo}{host}{rest[end:]}"


def redact(uri: str) -> str:
    """The URI without any password or token in it, ``***@`` showing where they were (for
    messages and logs)."""
    try:
        if not _secret_userinfo(urllib.parse.urlsplit(uri)):
            return uri
    except ValueError:  # not a URI urllib can read (a bad port, say): hide what looks like one
        return _CREDENTIALS.sub("://***@", uri)
    return _with_userinfo(uri, "***@")


def strip_credentials(uri: str) -> str:
    """The URI without its secret user info, as it is recorded (tags, config, manifests): git
    then takes the credentials from its helper, GIT_ASKPASS or ~/.netrc, so a rerun works."""
    try:
        parts = urllib.parse.urlsplit(uri)
        if not _secret_userinfo(parts):
            return uri
    except ValueError:
        return _CREDENTIALS.sub("://", uri)
    login = parts.username if parts.scheme.lower() in _SSH_SCHEMES else None
    return _with_userinfo(uri, f"{login}@" if login else "")


def has_credentials(text: str) -> bool:
    """True if a URI anywhere in ``text`` carries a password or token in its user info."""
    return any(strip_credentials(m.group()) != m.group() for m in _URI_IN_TEXT.finditer(text))


def without_credentials(value: Any) -> Any:
    """``value`` (plain data: a config, a manifest) with every URI in its strings stripped of
    its credentials; keys and other values as they are."""
    if isinstance(value, dict):
        return {k: without_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_credentials(v) for v in value]
    if isinstance(value, str) and has_credentials(value):
        return _URI_IN_TEXT.sub(lambda m: strip_credentials(m.group()), value)
    return value


def find_credentials(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, string) of every string in ``value`` (plain data) holding a URI with
    credentials."""
    if isinstance(value, dict):
        return [f for key, item in value.items() for f in find_credentials(item, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in find_credentials(item, f"{prefix}{i}.")]
    if isinstance(value, str) and has_credentials(value):
        return [(prefix.rstrip("."), value)]
    return []


def _is_repository_key(key: str) -> bool:
    """components.repository or components.overrides.<step>.repository: URIs git fetches."""
    parts = key.split(".")
    return parts == ["components", "repository"] or (
        len(parts) == 4 and parts[:2] == ["components", "overrides"] and parts[3] == "repository"
    )


def refuse_credentials(
    settings: dict[str, Any],
    what: str = "Setting",
    consequence: str = ": its step would get it as a parameter, which MLflow and W&B record "
    "in clear",
    fix: str = "take them out of the URI: download the file and name its local path, or serve "
    "it where it needs none.",
    allowed: Callable[[str], bool] = _is_repository_key,
) -> None:
    """Refuse a URI with credentials in any of ``settings`` but the ``allowed`` keys (by default
    the components' repositories, which git fetches and which are recorded stripped)."""
    leaked = [(k, v) for k, v in find_credentials(settings) if not allowed(k)]
    if leaked:
        key, value = leaked[0]
        raise RepriseError(
            f"{what} {key} holds a URI with credentials ({scrub(value)[:200]}){consequence}.", fix
        )


_CREDENTIALS = re.compile(r"://[^/\s]*@")


def scrub(text: str, uri: str = "") -> str:
    """``text`` (git's or Hydra's message, say) without credentials: none of any URI in it, and
    none of ``uri``'s, however it was quoted."""
    if uri:
        text = text.replace(uri, redact(uri))
    text = _CREDENTIALS.sub("://***@", text)
    userinfo, at, _ = urllib.parse.urlsplit(uri).netloc.rpartition("@")
    if at and userinfo:
        text = text.replace(f"{userinfo}@", "***@")
        _, colon, secret = userinfo.partition(":")
        if colon and secret:
            text = text.replace(secret, "***")
    return text
