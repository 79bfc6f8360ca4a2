"""The Spark engine: the same row checks and scores on Apache Spark, for inputs beyond one
machine. pyspark is imported only when this engine runs."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from reprise.errors import RepriseError
from reprise.serving.batch.plan import (
    LABEL,
    PROBABILITY,
    REASON,
    Plan,
    bad_row_error,
    make_plan,
    temp_prefix,
)
from reprise.serving.batch.score import (
    check_and_type,
    limit_threads,
)
from reprise.serving.batch.write import put_in_place

if TYPE_CHECKING:  # imported when used: it brings MLflow, seconds of import
    from reprise.serving.model import ServedModel

log = logging.getLogger(__name__)

SPARK_MASTER_ENV = "REPRISE_SPARK_MASTER"  # a cluster's master URL; default local[workers]
PANDAS3_WARNING = "PySpark does not yet fully support pandas"
SPARK_START_HINT = (
    "install Java 17 (JAVA_HOME) and the spark extra (make setup), or use --engine local"
)
_SPARK_MODELS: dict[str, ServedModel] = {}


def _executor_model(uri: str, meta: dict[str, Any]) -> ServedModel:
    """The model in a Spark Python worker, loaded once per worker from its URI."""
    if uri not in _SPARK_MODELS:
        limit_threads()
        from reprise.serving.model import load

        _SPARK_MODELS[uri] = load(uri, meta)
    return _SPARK_MODELS[uri]


def _spark_session(workers: int, chunk_rows: int) -> Any:
    """A Spark session: local[workers] on 127.0.0.1 unless REPRISE_SPARK_MASTER names one."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise RepriseError("pyspark is not installed.", SPARK_START_HINT) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # pyspark 4.3 warns on every pandas UDF that pandas 3 is not fully supported; the scores
    # are checked equal to the local engine's (tests/test_batch_e2e.py)
    os.environ.setdefault("PYTHONWARNINGS", f"ignore:{PANDAS3_WARNING}:FutureWarning")
    warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
    logging.getLogger("py4j").setLevel(logging.WARNING)
    master = os.environ.get(SPARK_MASTER_ENV) or f"local[{workers}]"
    builder = SparkSession.builder.master(master).appName("reprise-predict")
    if master.startswith("local"):  # nothing listens beyond this machine
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    builder = (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(chunk_rows, 100_000)))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.executorEnv.MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI", ""))
    )
    try:
        spark = builder.getOrCreate()
    except Exception as err:
        raise RepriseError(
            f"Spark could not start: {str(err).splitlines()[0]}", SPARK_START_HINT
        ) from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _spark_kind(data_type: Any) -> tuple[str, str]:
    """A Spark type as a kind of value, and its name."""
    from pyspark.sql import types as T

    spelled = data_type.simpleString()
    if isinstance(data_type, T.StringType | T.VarcharType | T.CharType):
        return "string", spelled
    if isinstance(data_type, T.NullType):
        return "null", spelled
    if isinstance(data_type, T.NumericType):
        return "number", spelled
    return "other", spelled


def _spark_type(kind: str) -> Any:
    """The Spark type of a signature kind."""
    from pyspark.sql import types as T

    return {"integer": T.LongType(), "number": T.DoubleType()}.get(kind, T.StringType())


def _with_row_numbers(frame: Any) -> Any:
    """A 0-based row number ``_row`` in read order, computed in the JVM."""
    # the partition's offset plus the position in it: monotonically_increasing_id holds the
    # partition in its upper 31 bits and the position in the lower 33
    from pyspark.sql import functions as F

    frame = frame.withColumn("_mid", F.monotonically_increasing_id())
    partition = F.shiftright(F.col("_mid"), 33)
    counts = sorted(
        (row["p"], row["n"])
        for row in frame.groupBy(partition.alias("p")).agg(F.count("*").alias("n")).collect()
    )
    offsets, total = [], 0
    for part, count in counts:
        offsets += [F.lit(part), F.lit(total)]
        total += count
    if not offsets:
        return frame.withColumn("_row", F.lit(0).cast("long")).drop("_mid")
    start = F.create_map(*offsets)[partition]
    row = F.col("_mid") - F.shiftleft(partition, 33) + start
    return frame.withColumn("_row", row).drop("_mid")


def _column_with_gaps(values: pd.Series, good: np.ndarray, kind: str) -> Any:
    """A typed column of the good rows spread over all rows, null where a row is bad."""
    if kind == "integer":
        data = np.zeros(len(good), dtype=np.int64)
        data[good] = values.to_numpy(dtype=np.int64)
        return pd.arrays.IntegerArray(data, ~good)
    if kind == "number":
        data = np.full(len(good), np.nan)
        data[good] = values.to_numpy(dtype=np.float64)
        return data
    data = np.full(len(good), None, dtype=object)
    data[good] = values.astype(object).where(values.notna(), None).to_numpy(dtype=object)
    return data


def _spark_prepare(uri: str, meta: dict[str, Any], columns: dict[str, str]) -> Any:
    """A pandas UDF: each row's reason ("" when good), probability and typed model columns."""
    # the same code as the local engine: ServedModel's checks and scores, per Arrow batch
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    fields = [
        T.StructField(REASON, T.StringType()),
        T.StructField(PROBABILITY, T.DoubleType()),
        *(T.StructField(c, _spark_type(kind)) for c, kind in columns.items()),
    ]

    def prepare(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        served = _executor_model(uri, meta)
        for frame in batches:
            frame = frame.reset_index(drop=True)
            # a missing number stays a bad row here: the label's spark_udf reads integer
            # columns as int64, which holds no missing value
            reasons, typed = check_and_type(served, frame, impute=False)
            good = (reasons == "").to_numpy()
            out = pd.DataFrame({REASON: reasons.to_numpy(dtype=object)})
            probability = np.full(len(frame), np.nan)
            if good.any():
                probability[good] = served.score(typed)[0]
            out[PROBABILITY] = probability
            for column, kind in columns.items():
                out[column] = _column_with_gaps(typed[column], good, kind)
            yield out

    # pyspark's own overloads leave out an iterator of frames returning a struct, which Spark
    # runs (SCALAR_ITER with a struct type): its stubs are wrong here, not the call
    return F.pandas_udf(prepare, T.StructType(fields))  # type: ignore[call-overload]


def _spark_write(frame: Any, target: Path, kind: str, overwrite: bool) -> None:
    """Write ``frame`` as Spark writes: a folder of part files, renamed into place at the end."""
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=temp_prefix(target), suffix=".part"))
    temp.rmdir()
    try:
        writer = frame.write.mode("error")
        if kind == "parquet":
            writer.parquet(str(temp))
        else:
            writer.option("header", True).csv(str(temp))
        put_in_place(temp, target, overwrite)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def predict_spark(
    input_path: Path,
    kind: str,
    output_path: Path,
    served: ServedModel,
    meta: dict[str, Any],
    id_column: str | None,
    chunk_rows: int,
    workers: int,
    on_error: str,
    overwrite: bool,
) -> tuple[Plan, int, int, int]:
    """The same scoring on Apache Spark; (plan, rows read, scored, quarantined)."""
    # the label from mlflow.pyfunc.spark_udf; the row checks and the probability from a pandas
    # UDF running ServedModel's code
    import mlflow.pyfunc
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    spark = _spark_session(workers, chunk_rows)
    try:
        reader = spark.read
        if kind == "csv":
            frame = reader.option("header", True).option("inferSchema", False).csv(str(input_path))
        else:
            frame = reader.parquet(str(input_path))
        available = {f.name: _spark_kind(f.dataType) for f in frame.schema.fields}
        plan = make_plan(
            input_path, output_path, served.columns, available, id_column, on_error, overwrite
        )
        ident = F.col("_row") if plan.id_generated else F.col(plan.id_column)
        frame = _with_row_numbers(frame.select(*[F.col(f"`{c}`") for c in plan.read_columns]))
        prepare = _spark_prepare(served.uri, meta, served.columns)
        checked = frame.select(
            F.col("_row"),
            ident.alias(plan.id_column),
            prepare(F.struct(*[F.col(f"`{c}`") for c in served.columns])).alias("_p"),
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            reason = F.col("_p").getField(REASON)
            read = checked.count()
            bad = checked.filter(reason != "")
            quarantined = bad.count()
            if quarantined and on_error == "fail":
                row = bad.orderBy("_row").select("_row", plan.id_column, reason.alias("r")).first()
                raise bad_row_error(
                    plan, row["_row"], row[plan.id_column], row["r"], quarantined, "in the file"
                )
            # env_manager "local": this environment is the model's (its warning says otherwise)
            pyfunc_log = logging.getLogger("mlflow.pyfunc")
            level = pyfunc_log.level
            pyfunc_log.setLevel(logging.ERROR)
            try:
                label = mlflow.pyfunc.spark_udf(
                    spark, served.uri, result_type="long", env_manager="local"
                )
            finally:
                pyfunc_log.setLevel(level)
            model_input = F.struct(*[F.col("_p").getField(c).alias(c) for c in served.columns])
            good = checked.filter(reason == "").select(
                F.col(plan.id_column),
                F.col("_p").getField(PROBABILITY).alias(PROBABILITY),
                label(model_input).alias(LABEL),
            )
            if plan.quarantine is not None:
                _spark_write(
                    bad.orderBy("_row").select(plan.id_column, reason.alias(REASON)),
                    plan.quarantine,
                    plan.output_format,
                    overwrite,
                )
            _spark_write(good, plan.output, plan.output_format, overwrite)
            scored = read - quarantined
        finally:
            checked.unpersist()
    except RepriseError:
        raise
    except Exception as err:
        if type(err).__name__ not in ("Py4JJavaError", "AnalysisException", "PythonException"):
            raise
        raise RepriseError(
            f"Spark failed: {str(err).strip().splitlines()[0][:500]}",
            "see the Spark error above; --engine local scores one machine's worth of rows.",
        ) from None
    finally:
        spark.stop()
    return plan, read, scored, quarantined
