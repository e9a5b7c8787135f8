"""Dumps and tables in object storage: a real S3 API on 127.0.0.1 (moto's server), the bundled
sample uploaded to a bucket.

* The embedded engine runs the whole pipeline (LLM off) with ``--data s3://lake/dumps`` and
  ``storage.root=s3://lake/lewin-data``: Delta tables, the PII key file and the shards all land in
  the bucket, and every table equals a local run's. A rerun finds nothing new.
* Classic Spark ingests from the bucket (its Python workers open the objects through
  ``lewin.udfs.fs``; the JVM has no S3A connector here, so the driver lists through the same
  layer) into local Parquet tables: the same bronze as the embedded run. Tables in the bucket
  on classic Spark need the ``hadoop-aws`` jars, which cannot be fetched offline.
* The filesystem layer itself: URLs in, URLs out, and a clear error for a scheme whose package
  is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lewin.udfs import fs

from .test_cluster import PIPELINE, _assert_same, _snapshot

moto_server = pytest.importorskip("moto.server", reason="moto[server] is a test dependency (pip install '.[test]')")
pytest.importorskip("s3fs", reason="s3fs is the S3 filesystem (pip install 'lewin[s3]')")

SALT = "object-store-test-key"
BUCKET = "lake"
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, credentials in this process's environment (the
    subprocesses inherit them), and the bundled sample under ``s3://lake/dumps/``."""
    import boto3

    from lewin.jobs.cli import bundled_sample

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    sample = bundled_sample()
    for path in sorted(sample.rglob("*")):
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts:
            client.upload_file(str(path), BUCKET, "dumps/" + path.relative_to(sample).as_posix())
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ, TZ="UTC", LEWIN_PII_SALT=SALT, PYSPARK_PYTHON=sys.executable, **extra)
    for var in ("SPARK_CONNECT_MODE_ENABLED", "SPARK_REMOTE", "SPARK_LOCAL_REMOTE"):
        env.pop(var, None)
    return env


def _lewin(cwd: Path, env: dict[str, str], *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "lewin.jobs.cli", *args], cwd=cwd, env=_env(env),
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stdout[-2000:] + "\n" + r.stderr[-4000:]
    return r.stdout


def _delta_reader(root: str, storage_options: dict[str, str] | None = None):
    from deltalake import DeltaTable

    return lambda name: DeltaTable(fs.join(root, name), storage_options=storage_options).to_pyarrow_table().to_pylist()


def _s3_options(env: dict[str, str]) -> dict[str, str]:
    return {k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                "AWS_ALLOW_HTTP")}


@pytest.fixture(scope="module")
def bucket_run(s3, tmp_path_factory):
    """``lewin run`` with dumps and tables in the bucket (embedded engine, LLM off)."""
    cwd = tmp_path_factory.mktemp("bucket_run")
    out = _lewin(cwd, s3, "--set", f"storage.root=s3://{BUCKET}/lewin-data", *PIPELINE, "run",
                 "--data", f"s3://{BUCKET}/dumps")
    return cwd, out


def test_pipeline_with_dumps_and_tables_in_a_bucket_equals_a_local_run(s3, bucket_run, tmp_path_factory):
    cwd, out = bucket_run
    assert "every funnel reconciles" in out and f"s3://{BUCKET}/lewin-data" in out
    assert not (cwd / "lewin-data").exists(), "nothing is written to the working folder"

    import s3fs

    bucket = s3fs.S3FileSystem()
    keys = set(bucket.find(f"{BUCKET}/lewin-data"))
    for table in ("bronze_reddit", "silver_records", "silver_records_scrubbed", "users", "ingest_log"):
        assert any(k.startswith(f"{BUCKET}/lewin-data/{table}/_delta_log/") for k in keys), table
    assert f"{BUCKET}/lewin-data/_secrets/pii_salt" not in keys, "the salt came from the environment"
    assert f"{BUCKET}/lewin-data/shards/manifest.json" in keys
    got = _snapshot(_delta_reader(f"s3://{BUCKET}/lewin-data", _s3_options(s3)),
                    bucket.cat_file(f"{BUCKET}/lewin-data/shards/manifest.json").decode())
    logged = {r["path"] for r in _delta_reader(f"s3://{BUCKET}/lewin-data", _s3_options(s3))("ingest_log")}
    assert logged and all(p.startswith(f"s3://{BUCKET}/dumps/") for p in logged), sorted(logged)[:3]

    # the same pipeline on local files and a local root (`--data` given, as above: no demo profile)
    from lewin.jobs.cli import bundled_sample

    local = tmp_path_factory.mktemp("local_run")
    _lewin(local, {}, *PIPELINE, "run", "--data", str(bundled_sample()))
    want = _snapshot(_delta_reader(str(local / "lewin-data")), local / "lewin-data" / "shards" / "manifest.json")
    _assert_same(got, want, "the bucket")


def test_a_rerun_on_the_bucket_finds_nothing_new(s3, bucket_run):
    cwd, _ = bucket_run
    read = _delta_reader(f"s3://{BUCKET}/lewin-data", _s3_options(s3))
    before = (len(read("ingest_log")), len(read("bronze_reddit")))
    out = _lewin(cwd, s3, "--set", f"storage.root=s3://{BUCKET}/lewin-data", "-v", "ingest", "--source", "reddit",
                 "--path", f"s3://{BUCKET}/dumps/reddit")
    assert (len(read("ingest_log")), len(read("bronze_reddit"))) == before, out[-2000:]


@pytest.mark.classic
def test_classic_spark_ingests_from_the_bucket(s3, bucket_run, tmp_path_factory):
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("classic Spark needs a JVM (Java 17); none found")
    import pyarrow.parquet as pq

    cwd = tmp_path_factory.mktemp("classic")
    conf = ["--set", "engine.kind=spark", "--set", "engine.master=local[2]", "--set", "storage.format=parquet",
            "--set", f"storage.root={cwd / 'tables'}"]
    # one source, one JVM: Reddit's files (JSON lines, gzip, zstd, CSV, Parquet) cover the readers' ways of
    # opening an object; every source's formats on classic executors are test_cluster.py's
    _lewin(cwd, s3, *conf, "ingest", "--source", "reddit", "--path", f"s3://{BUCKET}/dumps/reddit")
    embedded = _delta_reader(f"s3://{BUCKET}/lewin-data", _s3_options(s3))
    for table in ("bronze_reddit", "bronze_reddit_comments"):
        got = sorted(r["record_id"] for r in pq.read_table(str(cwd / "tables" / table)).to_pylist())
        assert got and got == sorted(r["record_id"] for r in embedded(table)), table
    logged = {r["path"] for r in pq.read_table(str(cwd / "tables" / "ingest_log")).to_pylist()}
    assert logged and all(p.startswith(f"s3://{BUCKET}/dumps/") for p in logged)


def test_the_filesystem_layer_speaks_urls(s3, tmp_path):
    root = f"s3://{BUCKET}/dumps"
    found = list(fs.find(f"{root}/blogger"))
    assert found and all(u.startswith(f"{root}/blogger/") and size > 0 and mtime > 0 for u, size, mtime in found)
    assert fs.list_dirs(root) == ["amazon", "blogger", "reddit", "twitter"]
    assert fs.isfile(found[0][0]) and not fs.isdir(found[0][0]) and fs.isdir(root)
    assert fs.join("s3://b/x/", "t") == "s3://b/x/t" and fs.parent("s3://b/x/t") == "s3://b/x"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(fs.find(f"s3://{BUCKET}/nothing-here"))
    # a local path, a file: URL and Databricks' FUSE spellings
    assert fs.location("file://" + str(tmp_path)) == str(tmp_path) == fs.location(f"file:{tmp_path}")
    assert fs._resolve("dbfs:/Volumes/main/raw/dumps")[1] == "/Volumes/main/raw/dumps"
    assert fs._resolve("dbfs:/mnt/raw")[1] == "/dbfs/mnt/raw"
    # a round trip through the bucket
    fs.write_bytes(f"s3://{BUCKET}/scratch/a.bin", b"abc")
    assert fs.read_bytes(f"s3://{BUCKET}/scratch/a.bin") == b"abc"
    fs.rm(f"s3://{BUCKET}/scratch")
    assert not fs.exists(f"s3://{BUCKET}/scratch/a.bin")


def test_a_scheme_without_its_package_names_the_extra(monkeypatch):
    import importlib

    registry = importlib.import_module("fsspec.registry")  # `fsspec.registry` is also a read-only view
    monkeypatch.setitem(registry.known_implementations, "gs",
                        {"class": "lewin_missing_gcsfs.GCSFileSystem", "err": "Please install gcsfs to access GCS"})
    monkeypatch.delitem(registry._registry, "gs", raising=False)
    with pytest.raises(ImportError, match=r"lewin\[gcs\]"):
        fs.exists("gs://bucket/dumps")
