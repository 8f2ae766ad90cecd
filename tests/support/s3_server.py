"""An S3-compatible server on loopback (moto's server mode), for the S3 blob store: buckets,
a boto3 client, the mirror's settings pointing at it, and its request log."""

from __future__ import annotations

import itertools
from pathlib import Path
import re
import subprocess
import sys
import time
from typing import NamedTuple

import boto3
from botocore.config import Config
import requests

from tests.support.upstream_registry import free_port

ACCESS_KEY_ID = "mirror-test-key"
SECRET_ACCESS_KEY = "mirror-test-secret"
REGION = "us-east-1"
PART_SIZE = 5 * 1024 * 1024  # S3's smallest, so that test blobs of a few MB take several parts

# What moto's server (werkzeug) logs per request: ... "GET /bucket/key?query HTTP/1.1" 206 -
_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


class S3Request(NamedTuple):
    method: str
    path: str  # /bucket/key, without the query string
    status: int


class S3Server:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(workdir) / f"moto-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self._buckets = itertools.count(1)

    def start(self, timeout: float = 30) -> S3Server:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                requests.get(f"{self.url}/moto-api/", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self):
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str = "mirror") -> str:
        """A new, empty bucket (names are made unique per server)."""
        bucket = f"{name}-{next(self._buckets)}"
        self.client().create_bucket(Bucket=bucket)
        return bucket

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Visible objects: key → size."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", ())}

    def uploads(self, bucket: str) -> list[str]:
        """Keys of the multipart uploads begun and neither completed nor aborted."""
        return [upload["Key"] for upload in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", ())]

    def parts(self, bucket: str, key: str) -> list[int]:
        """Numbers of the parts uploaded so far to the open multipart upload of `key`."""
        client = self.client()
        uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", ())
        return sorted(
            part["PartNumber"]
            for upload in uploads
            for part in client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"]).get("Parts", ())
        )

    def mirror_env(self, bucket: str, **extra: str) -> dict[str, str]:
        """The mirror's settings for a store in `bucket` of this server."""
        return {
            "MIRROR_STORAGE": "s3",
            "MIRROR_S3_BUCKET": bucket,
            "MIRROR_S3_ENDPOINT_URL": self.url,
            "MIRROR_S3_REGION": REGION,
            "MIRROR_S3_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "MIRROR_S3_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "MIRROR_S3_ADDRESSING_STYLE": "path",
            "MIRROR_S3_PART_SIZE": str(PART_SIZE),
            **extra,
        }

    def configure(self, settings, bucket: str, **overrides) -> None:
        """Point Django's settings (pytest-django's `settings` fixture) at a bucket of this server."""
        for name, value in self.mirror_env(bucket).items():
            setattr(settings, name, int(value) if name == "MIRROR_S3_PART_SIZE" else value)
        for name, value in overrides.items():
            setattr(settings, name, value)

    def requests_log(self) -> list[S3Request]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = _REQUEST_LINE.search(line)
            if match:
                found.append(S3Request(match["method"], match["uri"].partition("?")[0], int(match["status"])))
        return found
