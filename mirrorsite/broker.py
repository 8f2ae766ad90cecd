"""A Celery broker that needs no server: messages are files under MIRROR_DATA_DIR.

kombu's filesystem transport, made safe for several processes on one machine (the web
workers publish, the embedded worker consumes): a message is written under a staging name
and renamed into the queue folder, so a consumer never reads half a message, and a consumer
claims one by renaming it, so exactly one consumer gets it.
"""

from __future__ import annotations

import os
from pathlib import Path
from queue import Empty
import time
import uuid

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for folder in (self.queue_folder, self.staging_folder, self.claimed_folder, self.control_folder):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def root(self) -> Path:
        return Path(self.transport_options["root"])

    @property
    def queue_folder(self) -> Path:
        return self.root / "queue"

    @property
    def staging_folder(self) -> Path:
        return self.root / "staging"

    @property
    def claimed_folder(self) -> Path:
        return self.root / "claimed"

    @property
    def control_folder(self) -> Path:
        return self.root / "control"

    def _put(self, queue: str, payload, **kwargs) -> None:
        # Time first, so a sorted listing is oldest first.
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"
        staged = self.staging_folder / name
        with open(staged, "wb") as file:
            file.write(str_to_bytes(dumps(payload)))
        os.replace(staged, self.queue_folder / name)

    def _get(self, queue: str):
        suffix = f".{queue}.msg"
        for name in sorted(os.listdir(self.queue_folder)):
            if not name.endswith(suffix):
                continue
            claimed = self.claimed_folder / name
            try:
                os.rename(self.queue_folder / name, claimed)
            except FileNotFoundError:  # another consumer took it
                continue
            try:
                return loads(bytes_to_str(claimed.read_bytes()))
            finally:
                claimed.unlink(missing_ok=True)
        raise Empty()

    def _purge(self, queue: str) -> int:
        count = 0
        for name in os.listdir(self.queue_folder):
            if name.endswith(f".{queue}.msg"):
                (self.queue_folder / name).unlink(missing_ok=True)
                count += 1
        return count

    def _size(self, queue: str) -> int:
        return sum(1 for name in os.listdir(self.queue_folder) if name.endswith(f".{queue}.msg"))


class Transport(filesystem.Transport):
    Channel = Channel
    # Files need no host: without this kombu warns that none was given, on every connection.
    default_connection_params = {"port": 0, "hostname": ""}
