"""docker-compose.yml and the Dockerfile, read as data: the scaled layout is complete and
consistent with the code it runs. tests/e2e/test_replicas.py runs its shape for real: replicas
on one database and one Redis, behind deploy/nginx-mirror.conf; tests/e2e/test_docker_image.py
builds and runs the image with dockerd and has docker-compose check the file."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import yaml

from mirrorsite.config.loader import fields
from tests.support.mirror import PROJECT_ROOT

MIRRORSITE_SERVICES = ("web", "worker", "beat")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())


def setting_names() -> set[str]:
    """Every environment variable the code reads: the settings' schema (mirrorsite/config/schema.py)."""
    return {field.name for field, _kind, _declared in fields()}


def test_every_part_of_the_scaled_layout_is_there(compose):
    services = compose["services"]
    assert set(services) == {"lb", "tls-front", "web", "worker", "beat", "postgres", "redis", "minio", "bucket"}
    assert services["tls-front"]["profiles"] == ["tls"], "HTTPS in front is optional"
    for name in MIRRORSITE_SERVICES:
        assert services[name]["image"] == "mirrorsite:latest" and services[name]["build"] == "."
    assert "replicas" in services["web"]["deploy"] and "replicas" in services["worker"]["deploy"]
    assert "deploy" not in services["beat"], "one scheduler, never scaled"
    assert "ports" not in services["web"], "replicas are reached through the balancer only"
    assert services["lb"]["ports"], "the balancer is what clients reach"


def test_the_mirrorsite_services_set_only_real_settings(compose):
    known = setting_names()
    for name in MIRRORSITE_SERVICES:
        unknown = set(compose["services"][name]["environment"]) - known
        assert not unknown, f"{name}: not read by the settings: {sorted(unknown)}"


def test_replicas_share_database_redis_and_bucket_and_nothing_on_disk(compose):
    services = compose["services"]
    env = services["web"]["environment"]
    for variable, service in (
        ("DATABASE_URL", "postgres"),
        ("REDIS_URL", "redis"),
        ("MIRROR_S3_ENDPOINT_URL", "minio"),
    ):
        assert urlsplit(env[variable]).hostname == service, variable
    assert env["MIRROR_STORAGE"] == "s3"
    assert env["MIRROR_S3_BUCKET"] == services["bucket"]["environment"]["MIRROR_S3_BUCKET"], (
        "the bucket made is the one used"
    )
    assert "$$MIRROR_S3_BUCKET" in services["bucket"]["command"][0]
    named_volumes = set(compose.get("volumes") or {})
    for name in MIRRORSITE_SERVICES:
        mounts = {str(volume).split(":")[0] for volume in services[name].get("volumes", [])}
        assert not mounts & named_volumes, f"{name} shares a volume: replicas must share nothing on disk"
    for name in MIRRORSITE_SERVICES:  # one key for all: account secrets and shared tokens are encrypted with it
        assert services[name]["environment"]["DJANGO_SECRET_KEY"].startswith("${DJANGO_SECRET_KEY:?")
        assert services[name]["environment"]["MIRROR_SECRET_KEY"].startswith("${MIRROR_SECRET_KEY:?")


def test_start_order_waits_for_health_and_health_is_readiness(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on a missing {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency}'s health, which it lacks"
            if condition["condition"] == "service_completed_successfully":
                assert services[dependency]["restart"] == "no", f"{dependency} is a one-shot"
    web = services["web"]
    assert set(web["depends_on"]) == {"postgres", "redis", "bucket"}
    for name in ("worker", "beat", "lb", "tls-front"):
        assert services[name]["depends_on"] == {"web": {"condition": "service_healthy"}}, name
    for name in ("web", "lb"):
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"]), f"{name}'s health is readiness"


def test_the_balancer_renders_the_nginx_front_over_the_replicas(compose):
    lb = compose["services"]["lb"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in lb["volumes"])
    for source in mounts:
        assert (PROJECT_ROOT / source).is_file(), source
    assert mounts["./deploy/nginx-mirror.conf"] == "/etc/nginx/templates/default.conf.template", (
        "replaces the image's default server"
    )
    server = (PROJECT_ROOT / "deploy" / "nginx-mirror.conf").read_text()
    assert set(re.findall(r"\$\{(\w+)\}", server)) == set(lb["environment"]), "every placeholder filled, nothing else"
    assert lb["ports"] == [f"${{MIRROR_PORT:-5000}}:{lb['environment']['LISTEN']}"]
    replicas = (PROJECT_ROOT / "deploy" / "nginx-replicas.conf").read_text()
    assert re.search(rf"upstream {lb['environment']['MIRROR']} \{{", replicas)
    web_port = compose["services"]["web"]["expose"][0]
    assert re.search(rf"server web:{web_port} resolve", replicas), "every replica of `web`, as they come and go"


def test_every_variable_the_file_asks_for_is_documented():
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    variables = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert {"DJANGO_SECRET_KEY", "MIRROR_SECRET_KEY", "MINIO_ROOT_PASSWORD", "MIRROR_WEB_REPLICAS"} <= variables
    manual = "\n".join(page.read_text() for page in (PROJECT_ROOT / "docs").glob("*.md"))
    assert [name for name in sorted(variables) if f"`{name}`" not in manual and f"{name}=" not in manual] == []


def test_the_image_holds_every_package_of_the_project():
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text()
    packages = re.findall(
        r'"(\w+)\*"', re.search(r"\[tool\.setuptools\.packages\.find\]\s*include = \[(.*?)\]", pyproject).group(1)
    )
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    assert packages and all(f"COPY {package} /src/{package}" in dockerfile for package in packages), packages
