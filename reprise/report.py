"""The tables the release commands answer with, as lines of text for the command line to print:
a verification (manifest against a run) and the list of releases."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Comparison:
    """One thing a manifest records (a commit, a digest, a metric) against what a run made."""

    what: str
    expected: str
    actual: str
    same: bool


@dataclass(frozen=True)
class Verification:
    """A release's manifest compared with a pipeline run, and whether the registry stayed put."""

    version: str
    run_id: str
    seconds: float
    rows: list[Comparison]
    model_name: str
    # None when no rerun was made (a given run), else whether the registry is as it was found
    registry_unchanged: bool | None

    @property
    def different(self) -> list[Comparison]:
        """The rows that differ: any one means the release is not reproduced."""
        return [row for row in self.rows if not row.same]


@dataclass(frozen=True)
class ReleaseLine:
    """One release as its tag records it, and where it is known."""

    version: str
    date: str
    metrics: dict[str, float]
    model_name: str
    model_version: str
    is_prod: bool
    # "local", "origin", "local, origin" or "MOVED on origin"; empty when origin was not asked
    where: str


@dataclass(frozen=True)
class ReleaseListing:
    """The releases, the scores to show for each, and whether origin was asked."""

    metric_names: list[str]
    lines: list[ReleaseLine]
    remote: bool
    # releases that only origin has: fetched when named
    origin_only: bool


def verification_lines(result: Verification) -> list[str]:
    """The verification as a table: one row per commit, digest and metric, then the verdict."""
    rows = result.rows
    width = max(len(r.what) for r in rows)
    lines = [
        "",
        f"Release {result.version} against pipeline run {result.run_id} ({result.seconds:.0f} s)",
        f"{'what':<{width}}  {'same':<4}  expected -> actual",
    ]
    for row in rows:
        shown = row.expected if row.same else f"{row.expected} -> {row.actual}"
        lines.append(f"{row.what:<{width}}  {'yes' if row.same else 'NO':<4}  {shown[:100]}")
    lines.append(f"{len(rows) - len(result.different)} of {len(rows)} identical.")
    if result.registry_unchanged:
        lines.append(
            f"The registry is as it was: the rerun registered no model and moved no alias "
            f"of {result.model_name}."
        )
    return lines


def releases_lines(listing: ReleaseListing) -> list[str]:
    """The releases as a table: version, date, the chosen scores, model version, prod, where."""
    if not listing.lines:
        return ["No releases yet: make release PART=major"]
    shown = listing.metric_names
    where_column = f"  {'where':<14}" if listing.remote else ""
    scores = "".join(f" {name:>{max(len(name), 8)}}" for name in shown)
    lines = [f"{'version':<9} {'date':<10}{scores} {'model':>16}  {'prod':<4}{where_column}"]
    for release in listing.lines:
        where = f"  {release.where:<14}" if listing.remote else ""
        values = "".join(
            f" {release.metrics.get(name, float('nan')):>{max(len(name), 8)}.4f}" for name in shown
        )
        model = f"{release.model_name} v{release.model_version}"
        lines.append(
            f"{release.version:<9} {release.date:<10}{values} "
            f"{model:>16}  {'yes' if release.is_prod else '':<4}"
            f"{where}".rstrip()
        )
    if listing.origin_only:
        lines.append("A release on origin only is fetched when named: make verify VERSION=X.Y.Z")
    return lines
