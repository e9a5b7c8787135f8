"""One function gives a SparkSession for every supported engine.

* ``embedded`` — a local Sail (``pysail``) Spark Connect server that Lewin starts and stops
  itself: no JVM, no cluster, real Delta tables. Sail runs Python UDFs on threads of one
  interpreter, so Python-heavy stages fan out to ``lewin.udfs.pool`` (one process per core).
* ``spark`` — classic PySpark (``local[*]`` or a master URL) with delta-spark configured the
  standard way, or Parquet when the Delta jars are absent.
* ``connect`` — any Spark Connect URL. ``databricks`` — Databricks Connect or the cluster's session.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

from pyspark.sql import SparkSession

from lewin.schemas.config import EngineConfig

log = logging.getLogger(__name__)

_SAIL_LOCK = threading.Lock()
_SAIL_SERVER = None  # one embedded server per process, shared by every session


@dataclass
class Engine:
    spark: SparkSession
    kind: str
    python_workers: int
    """Processes a Python-heavy UDF may use (1 = inline)."""
    table_format: str
    """"delta" or "parquet" (classic Spark without the Delta jars)."""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _start_sail(mode: str, session_timeout_secs: int) -> tuple[str, int]:
    global _SAIL_SERVER
    with _SAIL_LOCK:
        if _SAIL_SERVER is not None and _SAIL_SERVER.running:
            return _SAIL_SERVER.listening_address
        # Sail reads its configuration from the environment when the server starts.
        os.environ["SAIL_MODE"] = mode
        os.environ.setdefault("RUST_LOG", "error")
        # Sail ends a session idle for longer than this (120 s by default); Lewin's long driver-side
        # steps (and a test suite's subprocesses) idle far longer, so the embedded server's limit is
        # ours to set. The keep-alive below covers whatever limit is in force.
        os.environ.setdefault("SAIL_SPARK__SESSION_TIMEOUT_SECS", str(session_timeout_secs))
        from pysail.spark import SparkConnectServer

        server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
        _SAIL_SERVER = server
        atexit.register(_stop_sail)
        return server.listening_address


def _stop_sail() -> None:
    global _SAIL_SERVER
    with _SAIL_LOCK:
        if _SAIL_SERVER is not None:
            try:
                _SAIL_SERVER.stop()
            except Exception:  # pragma: no cover - shutting down anyway
                pass
            _SAIL_SERVER = None


class _KeepAlive:
    """Pings a Spark Connect session at a fixed interval so the server never sees it idle.

    A daemon thread; the Spark Connect client is thread-safe. A ping that fails (server gone,
    session closed) stops the thread quietly: the next real query reports the actual error."""

    def __init__(self, spark: SparkSession, interval_s: float):
        self._spark = spark
        self._interval = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lewin-sail-keepalive", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._spark.range(1).collect()
            except Exception as exc:  # pragma: no cover - the session is gone; stop pinging
                log.debug("keep-alive stopped: %s", exc)
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)


def _session_timeout_secs() -> int:
    return int(os.environ.get("SAIL_SPARK__SESSION_TIMEOUT_SECS", "0") or 0)


def _common_conf(builder: SparkSession.Builder, cfg: EngineConfig) -> SparkSession.Builder:
    builder = builder.config("spark.sql.session.timeZone", "UTC")
    if cfg.shuffle_partitions:
        builder = builder.config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    for k, v in cfg.spark_conf.items():
        builder = builder.config(k, v)
    return builder


def _delta_jars_present() -> bool:
    """True when the JVM side of Delta is importable without a download (jars on the classpath)."""
    try:
        from pyspark.find_spark_home import _find_spark_home

        jars = os.path.join(_find_spark_home(), "jars")
        return any(n.startswith("delta-spark") or n.startswith("delta-core") for n in os.listdir(jars))
    except Exception:
        return False


def get_engine(cfg: EngineConfig, app_name: str = "lewin") -> Engine:
    """Create (or attach to) the session for ``cfg.kind``."""
    cores = _cores()
    if cfg.kind == "embedded":
        host, port = _start_sail(cfg.sail_mode, cfg.session_timeout_secs)
        builder = _common_conf(SparkSession.builder.remote(f"sc://{host}:{port}"), cfg)
        spark = builder.getOrCreate()
        workers = cfg.python_workers or cores
        # ping at a third of the server's idle limit (the one actually in force for this process)
        keepalive = _KeepAlive(spark, max(0.5, (_session_timeout_secs() or cfg.session_timeout_secs) / 3))

        def stop() -> None:
            keepalive.stop()
            spark.stop()

        return Engine(spark, "embedded", workers, "delta", _stop=stop)

    if cfg.kind == "spark":
        builder = SparkSession.builder.master(cfg.master).appName(app_name)
        builder = builder.config("spark.ui.enabled", "false")
        table_format = "delta"
        delta_mode = cfg.delta
        if delta_mode == "auto":
            delta_mode = "cluster" if _delta_jars_present() else "off"
        if delta_mode in ("pip", "cluster"):
            builder = builder.config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            builder = builder.config(
                "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
            )
            if delta_mode == "pip":
                if importlib.util.find_spec("delta") is None:
                    raise RuntimeError("engine.delta=pip needs delta-spark: pip install 'lewin[spark]'")
                from delta import configure_spark_with_delta_pip

                builder = configure_spark_with_delta_pip(builder)
        else:
            table_format = "parquet"
            log.warning("classic Spark without the Delta jars: tables are written as Parquet")
        # A Spark Connect session created earlier in this process sets SPARK_CONNECT_MODE_ENABLED,
        # which would turn this builder into a Connect client: build the classic session without it.
        saved = os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        try:
            spark = _common_conf(builder.config("spark.api.mode", "classic"), cfg).getOrCreate()
        finally:
            if saved is not None:
                os.environ["SPARK_CONNECT_MODE_ENABLED"] = saved
        return Engine(spark, "spark", cfg.python_workers or 1, table_format, _stop=spark.stop)

    if cfg.kind == "connect":
        if not cfg.remote:
            raise ValueError("engine.remote must be set (sc://host:port) when engine.kind is 'connect'")
        spark = _common_conf(SparkSession.builder.remote(cfg.remote), cfg).getOrCreate()
        return Engine(spark, "connect", cfg.python_workers or 1, "delta", _stop=None)

    if cfg.kind == "databricks":
        active = SparkSession.getActiveSession()
        if active is not None:  # running on a Databricks cluster: use its session
            return Engine(active, "databricks", cfg.python_workers or 1, "delta")
        try:
            from databricks.connect import DatabricksSession
        except ImportError:
            raise RuntimeError(
                "engine.kind=databricks outside a cluster needs databricks-connect: "
                "pip install 'lewin[databricks]'"
            ) from None
        spark = DatabricksSession.builder.getOrCreate()
        return Engine(spark, "databricks", cfg.python_workers or 1, "delta")

    raise ValueError(f"engine.kind: unknown engine {cfg.kind!r}")
