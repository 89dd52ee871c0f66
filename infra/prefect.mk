# Prefect operations (included by the Makefile): a local API server, the served deployment, the work-pool form.
# See docs/operations.md. Two shells:
#   make server                                   # shell 1: API + UI on http://127.0.0.1:4200
#   make serve                                    # shell 2: deployment stepcoder/iterate, runs on demand
#   eval "$(make -s prefect-env)"                 # shell 3: point the prefect CLI at the server, then
#   prefect deployment run stepcoder/iterate --param run_name=demo --watch

PREFECT_HOST ?= 127.0.0.1
PREFECT_PORT ?= 4200
PREFECT_URL  := http://$(PREFECT_HOST):$(PREFECT_PORT)/api
# The server's database, and the CLI's profiles, live under the project, not in ~/.prefect.
PREFECT_HOME_DIR := $(CURDIR)/.stepcoder/prefect
PREFECT_POOL ?= stepcoder-process
# e.g. SERVE_ARGS='--cron "0 * * * *" --timezone Europe/Paris --param run_name=nightly'
SERVE_ARGS ?=

PREFECT_ENV := PREFECT_HOME=$(PREFECT_HOME_DIR) PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1

.PHONY: server serve pool worker deploy prefect-env

server: setup
	mkdir -p $(PREFECT_HOME_DIR)
	$(PREFECT_ENV) $(BIN)/prefect server start --host $(PREFECT_HOST) --port $(PREFECT_PORT)

serve: setup
	$(PREFECT_ENV) PREFECT_API_URL=$(PREFECT_URL) PREFECT_RUNNER_POLL_FREQUENCY=$${PREFECT_RUNNER_POLL_FREQUENCY:-5} \
		$(BIN)/python -m flows.serve $(SERVE_ARGS)

# Work-pool form (infra/prefect.yaml): a process worker; `make deploy` registers the deployment in its pool.
pool: setup
	$(PREFECT_ENV) PREFECT_API_URL=$(PREFECT_URL) $(BIN)/prefect work-pool inspect $(PREFECT_POOL) >/dev/null 2>&1 || \
		$(PREFECT_ENV) PREFECT_API_URL=$(PREFECT_URL) $(BIN)/prefect work-pool create $(PREFECT_POOL) --type process

worker: pool
	$(PREFECT_ENV) PREFECT_API_URL=$(PREFECT_URL) STEPCODER_REPO=$(CURDIR) \
		$(BIN)/prefect worker start --pool $(PREFECT_POOL)

deploy: pool
	$(PREFECT_ENV) PREFECT_API_URL=$(PREFECT_URL) STEPCODER_REPO=$(CURDIR) \
		$(BIN)/prefect --no-prompt deploy --prefect-file infra/prefect.yaml --name iterate

# Print the exports that point a shell's `prefect` CLI at `make server`: eval "$(make -s prefect-env)"
prefect-env:
	@echo "export PREFECT_HOME=$(PREFECT_HOME_DIR) PREFECT_API_URL=$(PREFECT_URL)"
	@echo "export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 PATH=$(CURDIR)/$(BIN):\$$PATH"
