"""get_data: fetch the data set (and an optional reference) and log both with their sha256."""

from pathlib import Path

from step_kit import Step, read_table
from step_kit.cli import parse_args
from step_kit.tables import frame_digest

from fetch import fetch

HERE = Path(__file__).resolve().parent


def main() -> None:
    args = parse_args(HERE)
    with Step("get_data", vars(args)) as step:
        outputs = {"raw_data": args.sample, "reference_data": args.reference}
        for name, source in outputs.items():
            if not source:
                continue
            path = fetch(source, step.workdir / name, args.timeout)
            frame = read_table(path, name=source)  # readable before anyone relies on it
            step.log_metrics({f"{name}.rows": len(frame), f"{name}.columns": frame.shape[1]})
            step.output_file(name, path, content_digest=frame_digest(frame))


if __name__ == "__main__":
    main()
