# pgvigil: `make dev` and `make test` install what is missing, build, and run.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/pgvigil-target
CARGO ?= cargo

.PHONY: all deps deps-dev pg-majors build install image dev test test-matrix lint fuzz generate bench bench-scrape bench-proxy bench-backup bench-audit bench-custody clean

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

## install: the release binary, stripped, as /usr/local/bin/pgvigil (PREFIX=... to change)
PREFIX ?= /usr/local
install: build
	install -D -s -m 0755 $(CARGO_TARGET_DIR)/release/pgvigil $(DESTDIR)$(PREFIX)/bin/pgvigil

## image: the container image for one PostgreSQL major (deploy/Dockerfile), e.g.
## `make image PG_MAJOR=17`; the binary in it is stripped
PG_MAJOR ?= 15
IMAGE ?= ghcr.io/pgvigil/pgvigil
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
image:
	docker build -f deploy/Dockerfile --build-arg PG_MAJOR=$(PG_MAJOR) -t $(IMAGE):$(VERSION)-pg$(PG_MAJOR) .

## dev: a throwaway PostgreSQL with pgvigil on it; Ctrl-C tears it down
dev: deps-dev build
	$(CARGO_TARGET_DIR)/release/pgvigil dev

## test: every unit and integration test, against real servers on loopback
test: deps
	$(CARGO) test --locked --all-targets -- --test-threads=4

## fuzz: run every fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS each, one after the
## other (needs nightly; installs cargo-fuzz if missing). New corpus entries go to
## fuzz/target/corpus/<target>/ (ignored); crashes to fuzz/artifacts/<target>/.
## `make test` runs the committed corpora without libFuzzer (tests/it/fuzz_corpus.rs).
FUZZ_SECONDS ?= 180
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/target/corpus/$$t; \
	  echo "== fuzzing $$t for $(FUZZ_SECONDS)s"; \
	  CARGO_TARGET_DIR=$(CURDIR)/fuzz/target cargo +nightly fuzz run --sanitizer none --debug-assertions \
	    $$t fuzz/target/corpus/$$t fuzz/corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1; \
	done

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

bench-backup:   ## backup/restore, WAL archiving and replay vs pgBackRest 2.60/2.45 and pg_basebackup
	bench/backup.sh

bench-audit:    ## audit table forwarding: events/s and lag
	bench/audit.sh

bench-custody:  ## retention, residency check and off-site copy costs
	bench/custody.sh

clean:
	$(CARGO) clean
