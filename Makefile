# Mirrorsite: `make run` starts the mirror, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install test-tools migrate clean

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
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

test: $(STAMP) test-tools
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache test-artifacts

# Mirrorsite against Distribution in proxy mode, side by side (README: Benchmarks).
# Not part of `make test` (tests/benchmarks runs a smoke version). Pass flags with BENCH_ARGS="--rounds 1".
# Installs only what it uses: Distribution (upstream and the system compared), skopeo, curl, wrk.
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
