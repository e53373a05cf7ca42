# The two commands of the README are `make run` and `make test`; the others are for developers.
SHELL := /bin/bash
ARGS ?=

.PHONY: run test lint fmt bench

## Runs every function in one process on 127.0.0.1:3000 (pass flags with ARGS="--port 3001").
run:
	cargo run -p devserver -- $(ARGS)

## Runs every test; installs and starts moto for the DynamoDB, SQS and SES tests, and stops it;
## installs Chromium and its driver for the browser test when missing; then checks the Stripe
## sandbox with Stripe's official Python library (and the Stripe prices script against it and
## SSM in moto), and fuzzes the JSON API against
## docs/openapi.yaml with schemathesis (as an administrator and as a user).
test:
	scripts/browser-deps.sh
	scripts/with-moto.sh cargo test --workspace
	scripts/with-moto.sh scripts/check-sandbox-with-stripe-python.sh
	scripts/fuzz-api.sh

## The lints CI runs: formatting, clippy, the documentation, and the SAM template.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace
	scripts/lint-template.sh

fmt:
	cargo fmt --all

## Measures what BENCHMARKS.md reports (optimised build; takes several minutes on two cores).
bench:
	scripts/bench.sh
