.PHONY: help fmt lint test services-up services-down ci
help: ## Show this help.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'
fmt: ## Format the code.
	cargo fmt --all
lint: ## Clippy with warnings as errors.
	cargo clippy --workspace --all-targets -- -D warnings
services-up: ## Start Kafka, Redis and Prometheus on 127.0.0.1.
	scripts/services.sh up
services-down: ## Stop them.
	scripts/services.sh down
test: ## The test command (needs the services).
	cargo test --workspace
ci: ## What CI runs.
	bash .ci/run
