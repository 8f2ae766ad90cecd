# Mirrorsite: `make run` starts the mirror, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast docs settings-table lint install test-tools migrate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	exec $(PY) manage.py serve

# Debian's Distribution binary is the upstream registry of the end-to-end tests, skopeo the
# client, nginx the front that serves cache hits by X-Accel-Redirect; podman and containerd
# (with ctr) are the real clients pulled through the mirror as the README configures them.
# Chromium (headless, with its chromedriver) opens the admin's dashboard in the browser test.
# Docker Engine (docker.io: dockerd 20.10 and its client) pulls through the mirror and builds the
# image, on a base made by debootstrap; docker-compose checks docker-compose.yml; busybox-static
# is the runnable image the dockerd tests push.
test-tools:
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	{ command -v containerd >/dev/null && command -v ctr >/dev/null; } || missing="$$missing containerd"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	{ test -x /usr/sbin/dockerd && test -x /usr/bin/docker; } || missing="$$missing docker.io"; \
	test -x /usr/sbin/debootstrap || missing="$$missing debootstrap"; \
	test -x /usr/bin/docker-compose || missing="$$missing docker-compose"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The manual (docs/, MkDocs): built into site/; --strict makes a broken link or page an error.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The settings table of docs/configuration.md, regenerated from mirrorsite/config/schema.py.
settings-table: $(STAMP)
	$(PY) -m mirrorsite.config --write-docs

# ruff (lint and format check) and the import contracts of pyproject.toml (registry in
# floors, the apps in layers): a broken contract fails `make test` before the suite runs.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

# Tests that need no server (the `unit` tier, see tests/conftest.py): a quick check while working.
test-fast: $(STAMP)
	env -u DATABASE_URL $(PY) -m pytest -m unit -q $(PYTEST_ARGS)

# The suite runs on SQLite (the default), then, on PostgreSQL (the database of a scaled
# deployment), what can behave differently there: the `database` tier without the `clients` tier
# (real client daemons, the browser and `make run` run once). The second pass needs a PostgreSQL
# server: MIRROR_TEST_POSTGRES_URL (the database name is a prefix; each run makes and drops
# databases of its own on the server). It is checked before anything runs, and a server that
# does not answer fails `make test`. Without one, opt out with MIRROR_TEST_POSTGRES_URL= (empty):
# SQLite only, said loudly; never under CI=true.
MIRROR_TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/mirrorsite
# A PostgreSQL DATABASE_URL makes the settings a deployment, which wants a secret key.
TEST_SECRET_KEY := make-test-only-secret-key-never-used-in-production-0123456789

test: $(STAMP) test-tools lint docs
	@if [ -z "$(MIRROR_TEST_POSTGRES_URL)" ]; then \
		if [ "$$CI" = true ]; then echo "make test: CI=true needs the PostgreSQL pass; MIRROR_TEST_POSTGRES_URL is empty" >&2; exit 1; fi; \
		echo "#### make test: PostgreSQL pass SKIPPED (MIRROR_TEST_POSTGRES_URL is empty): SQLite only ####" >&2; \
	else \
		$(PY) -m tests.support.databases "$(MIRROR_TEST_POSTGRES_URL)" || { \
			echo "#### make test: PostgreSQL is needed for the second pass of the suite. Start it, point" >&2; \
			echo "#### MIRROR_TEST_POSTGRES_URL at one, or run SQLite only with: make test MIRROR_TEST_POSTGRES_URL=" >&2; \
			exit 1; }; \
	fi
	@echo "==== make test: SQLite pass ===="
	env -u DATABASE_URL $(PY) -m pytest --durations=20 $(PYTEST_ARGS)
	@if [ -n "$(MIRROR_TEST_POSTGRES_URL)" ]; then \
		echo "==== make test: PostgreSQL pass ($(MIRROR_TEST_POSTGRES_URL)) ===="; \
		DATABASE_URL="$(MIRROR_TEST_POSTGRES_URL)" DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$(TEST_SECRET_KEY)}" \
			$(PY) -m pytest -m "database and not clients" --durations=20 $(PYTEST_ARGS); \
	else \
		echo "#### make test: PostgreSQL pass SKIPPED (MIRROR_TEST_POSTGRES_URL is empty): SQLite only ####" >&2; \
	fi

clean:
	rm -rf $(VENV) data site .pytest_cache test-artifacts

# Mirrorsite against Distribution in proxy mode, side by side (README: Benchmarks).
# Not part of `make test` (tests/benchmarks runs a smoke version). Pass flags with BENCH_ARGS="--rounds 1".
# Installs only what it uses: Distribution (upstream and the system compared), skopeo, curl, wrk.
# Its scaled setup also wants PostgreSQL and Redis on 127.0.0.1 (flags: --scaled-database-url, --scaled-redis-url).
.PHONY: bench
bench: $(STAMP)
	@missing=""; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(PY) -m benchmarks.run $(BENCH_ARGS)
