# pgvigil: `make dev` and `make test` install what is missing, build, and run.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pgvigil-target
CARGO ?= cargo

.PHONY: all deps deps-dev pg-majors build dev test test-matrix lint generate bench bench-scrape bench-proxy bench-backup bench-audit bench-custody clean

all: build

## deps: install everything the tests need (only what is missing)
deps:
	@scripts/deps.sh test

deps-dev:
	@scripts/deps.sh dev

## pg-majors: PostgreSQL 17 and 18 in Debian trixie/sid chroots under ~/.cache/pgvigil/pg
## (built once, then cached; `make deps` runs it too)
pg-majors:
	@scripts/pg-chroots.sh

build:
	$(CARGO) build --release --locked

## dev: a throwaway PostgreSQL with pgvigil on it; Ctrl-C tears it down
dev: deps-dev build
	$(CARGO_TARGET_DIR)/release/pgvigil dev

## test: every unit and integration test, against real servers on loopback
test: deps
	$(CARGO) test --locked --all-targets -- --test-threads=4

## test-matrix: only the tests that run on every PostgreSQL major (15, 17, 18)
test-matrix: deps
	$(CARGO) test --locked --test it -- --test-threads=2 pg_majors::

## lint: formatting and clippy, as CI runs them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## generate: rewrite the files generated from alerts/ and dashboards/
## (deploy/kubernetes/prometheusrule.yaml, grafana-dashboards.yaml); commit the result
generate:
	$(CARGO) run --locked --quiet --example generate_manifests

## bench: every side-by-side benchmark (see bench/README.md); each also runs alone
bench: bench-scrape bench-proxy bench-backup bench-audit bench-custody

bench-scrape:   ## scrape cost vs postgres_exporter
	bench/scrape.sh

bench-proxy:    ## API proxy vs nginx
	bench/proxy.sh

bench-backup:   ## backup/restore vs pgBackRest and pg_basebackup, wal-push per segment
	bench/backup.sh

bench-audit:    ## audit table forwarding: events/s and lag
	bench/audit.sh

bench-custody:  ## retention, residency check and off-site copy costs
	bench/custody.sh

clean:
	$(CARGO) clean
