# Two entry points (see README): `make run` starts a working gateway, `make test` runs every
# test. Both install what a fresh Debian machine with only Rust lacks.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps lint bench bench-images

# cmake: Pingora's zlib build needs it. openssl: tests make TLS certificates with it.
# systemd-analyze (package systemd): a test verifies the unit file with it.
# openai: the Python SDK the tests drive.
deps:
	@command -v cmake >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }
	@command -v openssl >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openssl; }
	@command -v systemd-analyze >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq systemd; }
	@python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet openai \
		|| python3 -m pip install --quiet --user --break-system-packages openai

# Without OPENAI_API_KEY: the bundled mock upstream on 127.0.0.1:8900 stands in for OpenAI.
run: deps
	$(CARGO) build --release --bin tollgate --example mock_upstream
	@mkdir -p data
	@set -e; \
	if [ -z "$$OPENAI_API_KEY" ]; then \
		target/release/examples/mock_upstream --listen 127.0.0.1:8900 & mock=$$!; \
		trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
		export TOLLGATE_UPSTREAM=http://127.0.0.1:8900; \
		echo "OPENAI_API_KEY is not set: proxying to the bundled mock upstream ($$TOLLGATE_UPSTREAM)"; \
	else \
		echo "proxying to https://api.openai.com with your OPENAI_API_KEY"; \
	fi; \
	echo; \
	echo "Gateway: http://127.0.0.1:8080   admin API: 127.0.0.1:8081   metrics: http://127.0.0.1:9090/metrics"; \
	echo "In another terminal:"; \
	echo "  target/release/tollgate admin -c conf/demo.yaml users add alice      # prints alice's key"; \
	echo "  curl http://127.0.0.1:8080/v1/chat/completions -H \"Authorization: Bearer \$$KEY\" \\"; \
	echo "       -H 'Content-Type: application/json' -d '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}'"; \
	echo; \
	target/release/tollgate serve -c conf/demo.yaml

test: deps
	$(CARGO) test --all-targets

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

# Side by side on loopback: the mock directly, a bare Pingora proxy, Tollgate, Tollgate with
# Idempotency-Key, SSE; a fixed 2,000 requests/s; RSS with 100,000 keys; SSE streams held open.
# Installs wrk (Debian) and oha (built once from crates.io) when missing (see benches/compare.sh).
bench: deps
	benches/compare.sh

# Cache-hit throughput of /prompt for a 1 MiB image (wrk, loopback; see benches/image_hits.sh).
bench-images: deps
	benches/image_hits.sh
