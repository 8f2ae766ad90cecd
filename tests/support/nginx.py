"""nginx in front of the mirror, configured from the deploy/ example the manual points at."""

from __future__ import annotations

from pathlib import Path
import signal
import subprocess
import time

import requests

from tests.support.mirror import PROJECT_ROOT
from tests.support.tls import ServerCertificate
from tests.support.upstream_registry import free_port

NGINX = "/usr/sbin/nginx"


class NginxFront:
    """`mirror_host` is one mirror's address, or several replicas' (nginx balances them, and
    sends a request the next one's way when one cannot be reached). With `tls`, it serves
    HTTPS with that certificate (deploy/nginx-tls.conf), as the docker-compose `tls` profile does."""

    def __init__(
        self, workdir: Path, mirror_host: str | list[str], blob_dir: Path, tls: ServerCertificate | None = None
    ):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"{'https' if tls else 'http'}://{self.host}"
        self.verify: str | bool = str(tls.ca_cert) if tls else True
        server = (PROJECT_ROOT / "deploy" / "nginx-mirror.conf").read_text()
        if isinstance(mirror_host, list):
            servers = "".join(f"    server {host} max_fails=1 fail_timeout=30s;\n" for host in mirror_host)
            server = f"upstream mirror_replicas {{\n{servers}    keepalive 16;\n}}\n{server}"
            mirror_host = "mirror_replicas"
        server = server.replace("${LISTEN}", f"{self.host} ssl" if tls else self.host).replace("${MIRROR}", mirror_host)
        server = server.replace("${BLOB_DIR}", str(blob_dir))
        if tls:
            tls_conf = (PROJECT_ROOT / "deploy" / "nginx-tls.conf").read_text()
            server = tls_conf.replace("${TLS_CERTIFICATE}", str(tls.cert)).replace("${TLS_KEY}", str(tls.key)) + server
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        w = self.workdir
        (w / "nginx.conf").write_text(
            f"""user root;
daemon off;
worker_processes 1;
pid {w}/nginx.pid;
error_log {w}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log {w}/access.log;
    sendfile on;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
{server}
}}
"""
        )
        self.process: subprocess.Popen | None = None

    def start(self) -> NginxFront:
        self.process = subprocess.Popen(
            [NGINX, "-c", str(self.workdir / "nginx.conf"), "-p", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "stderr.log", "wb"),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "stderr.log").read_text()
            try:
                requests.get(f"{self.url}/v2/", timeout=1, verify=self.verify)
                return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
