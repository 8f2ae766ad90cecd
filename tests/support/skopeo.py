"""skopeo, isolated from the host's configuration (no registries.conf mirrors, no stored
credentials, no proxies), as an independent registry client for the tests."""

from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import subprocess


class Skopeo:
    def __init__(self, workdir: Path):
        binary = shutil.which("skopeo")
        if binary is None:  # `make test` installs it; a missing client is a failure, not a skip
            raise RuntimeError("skopeo is not installed: run `make test`, which installs it")
        self.binary = binary
        self.workdir = Path(workdir)
        (self.workdir / "registries.conf").write_text("")
        self.policy = self.workdir / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        self.env.update(
            HOME=str(self.workdir),
            XDG_RUNTIME_DIR=str(self.workdir),
            REGISTRY_AUTH_FILE=str(self.workdir / "auth.json"),
            CONTAINERS_REGISTRIES_CONF=str(self.workdir / "registries.conf"),
            CONTAINERS_POLICY=str(self.policy),
        )

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
        # skopeo 1.9 reads the host's registries.conf unless told otherwise on the command line.
        proc = subprocess.run(
            [
                self.binary,
                "--policy",
                str(self.policy),
                "--registries-conf",
                str(self.workdir / "registries.conf"),
                *args,
            ],
            env=self.env,
            capture_output=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"skopeo {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode()}")
        return proc
