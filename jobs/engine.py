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
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable

from pyspark.sql import SparkSession

from lewin.jobs.preflight import PreflightError
from lewin.schemas.config import EngineConfig

log = logging.getLogger(__name__)


class EngineUnavailable(PreflightError):
    """The engine's endpoint cannot be reached (one line naming the key and the endpoint)."""


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


def cores() -> int:
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


# --- reaching a remote engine -------------------------------------------------------------------
def parse_remote(remote: str) -> tuple[str, int]:
    """(host, port) of a Spark Connect URL, parsed the way the client parses it (port 15002 by
    default). Raises ``PreflightError`` naming ``engine.remote`` for a malformed URL."""
    from pyspark.sql.connect.client.core import DefaultChannelBuilder

    try:
        builder = DefaultChannelBuilder(remote)
        host, port = builder.host, int(builder.endpoint.rsplit(":", 1)[1])
    except Exception as exc:
        detail = " ".join(str(exc).split())
        raise PreflightError(f"engine.remote: {remote!r} is not a Spark Connect URL (sc://host:port): {detail}") from None
    if not host:
        raise PreflightError(f"engine.remote: {remote!r} names no host (sc://host:port)")
    if not 0 < port < 65536:
        raise PreflightError(f"engine.remote: {remote!r}: port {port} is out of range")
    return host, port


def parse_master(master: str) -> list[tuple[str, int]]:
    """(host, port) of each master of a ``spark://h1:7077[,h2:7077]`` URL (7077 by default)."""
    endpoints = []
    for part in master[len("spark://"):].split(","):
        host, _, port = part.strip().rstrip("/").rpartition(":") if ":" in part else (part.strip().rstrip("/"), "", "7077")
        try:
            p = int(port)
        except ValueError:
            p = -1
        if not host or not 0 < p < 65536:
            raise PreflightError(f"engine.master: {master!r}: {part.strip()!r} is not host:port")
        endpoints.append((host, p))
    return endpoints


def _tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """Why ``host:port`` does not accept a TCP connection within ``timeout`` s (name lookup
    included, which ``socket`` does not bound: the attempt runs on a daemon thread), or None."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except socket.gaierror as exc:
            outcome.append(f"cannot resolve host {host!r} ({exc.strerror or exc})")
        except ConnectionRefusedError:
            outcome.append(f"connection refused: nothing listens on {host}:{port}")
        except (socket.timeout, TimeoutError):
            outcome.append(f"no answer from {host}:{port} within {timeout:g}s")
        except OSError as exc:
            outcome.append(f"cannot connect to {host}:{port} ({exc.strerror or exc})")

    t = threading.Thread(target=attempt, name="lewin-engine-probe", daemon=True)
    t.start()
    t.join(timeout)
    if not outcome:
        return f"no answer from {host}:{port} within {timeout:g}s"
    return outcome[0]


def _grpc_why(exc: BaseException) -> str:
    """A gRPC / Spark Connect error on one line: ``UNIMPLEMENTED: <details>``, or its text."""
    import re

    text = str(exc)
    details = re.search(r'details = "([^"]*)"', text)
    if details:
        status = re.search(r"status = StatusCode\.(\w+)", text)
        return (f"{status.group(1)}: " if status else "") + details.group(1)
    return " ".join(text.split())[:300] or type(exc).__name__


def probe_remote(remote: str, timeout: float) -> None:
    """Raise ``EngineUnavailable`` unless the Spark Connect endpoint ``remote`` accepts a TCP
    connection and completes the gRPC (HTTP/2, TLS with ``use_ssl``) handshake within ``timeout``
    seconds in all. The client itself would retry a refused connection for minutes and wait
    forever on a server that accepts connections but never answers."""
    import time

    host, port = parse_remote(remote)
    key = f"engine.remote: {remote}"
    hint = f"(engine.connect_timeout_seconds={timeout:g})"
    deadline = time.monotonic() + timeout
    why = _tcp_problem(host, port, timeout)
    if why is not None:
        raise EngineUnavailable(f"{key}: {why} {hint}")
    import grpc
    from pyspark.sql.connect.client.core import DefaultChannelBuilder

    channel = DefaultChannelBuilder(remote).toChannel()
    try:
        grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
    except grpc.FutureTimeoutError:
        raise EngineUnavailable(f"{key}: {host}:{port} accepts connections but no gRPC handshake completed within "
                                f"{timeout:g}s: not a Spark Connect server, or use_ssl does not match {hint}") from None
    finally:
        channel.close()


def probe_master(master: str, timeout: float) -> None:
    """Raise ``EngineUnavailable`` unless some master of a ``spark://`` URL accepts a TCP
    connection within ``timeout`` seconds (Spark would retry for a minute, then give up)."""
    whys = []
    for host, port in parse_master(master):
        why = _tcp_problem(host, port, timeout)
        if why is None:
            return
        whys.append(why)
    raise EngineUnavailable(f"engine.master: {master}: {'; '.join(whys)} (engine.connect_timeout_seconds={timeout:g})")


def get_engine(cfg: EngineConfig, app_name: str = "lewin") -> Engine:
    """Create (or attach to) the session for ``cfg.kind``."""
    n_cores = cores()
    if cfg.kind == "embedded":
        host, port = _start_sail(cfg.sail_mode, cfg.session_timeout_secs)
        builder = _common_conf(SparkSession.builder.remote(f"sc://{host}:{port}"), cfg)
        spark = builder.getOrCreate()
        workers = cfg.python_workers or n_cores
        # ping at a third of the server's idle limit (the one actually in force for this process)
        keepalive = _KeepAlive(spark, max(0.5, (_session_timeout_secs() or cfg.session_timeout_secs) / 3))

        def stop() -> None:
            keepalive.stop()
            spark.stop()

        return Engine(spark, "embedded", workers, "delta", _stop=stop)

    if cfg.kind == "spark":
        if cfg.master.startswith("spark://"):
            probe_master(cfg.master, cfg.connect_timeout_seconds)
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
        if not (cfg.remote or "").strip():
            raise PreflightError("engine.remote: not set; engine.kind=connect needs a Spark Connect URL (sc://host:15002)")
        probe_remote(cfg.remote, cfg.connect_timeout_seconds)
        try:
            spark = _common_conf(SparkSession.builder.remote(cfg.remote), cfg).getOrCreate()
        except Exception as exc:  # reachable, but no session: the server's first line names why
            raise EngineUnavailable(f"engine.remote: {cfg.remote}: no Spark Connect session ({_grpc_why(exc)})") from None
        return Engine(spark, "connect", cfg.python_workers or 1, "delta", _stop=None)

    if cfg.kind == "databricks":
        # No reachability probe: on a cluster the session is already there, and Databricks Connect
        # finds its workspace and cluster through the SDK's profile / environment (a REST call
        # with the SDK's own timeouts), not through an endpoint in Lewin's configuration.
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
