# The two commands in the README: `make run` and `make test`. Everything else is a helper.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint format install clean check-deploy typecheck

$(STAMP): requirements.lock pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check uv==0.13.9
	@$(VENV)/bin/uv pip sync --quiet --compile-bytecode --python $(PY) requirements.lock
	@touch $(STAMP)

install: $(STAMP)

## Start web + Celery worker + Celery beat on embedded PostgreSQL/Redis/localstripe.
run: $(STAMP)
	@$(PY) -m portal.devstack run

## The whole suite: lint, then every test (browser tests included).
test: $(STAMP) lint
	@$(PY) -m portal.devstack test $(ARGS)

lint: $(STAMP)
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/lint-imports --no-cache
	@$(MAKE) --no-print-directory typecheck

format: $(STAMP)
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

check-deploy: $(STAMP)
	@DJANGO_ENV=production SECRET_KEY=$$(openssl rand -hex 32) ALLOWED_HOSTS=portal.example.com \
	  DATABASE_URL=postgres://u@localhost/portal REDIS_URL=redis://localhost:6379/0 \
	  EMAIL_URL=smtp://localhost:25 STRIPE_SECRET_KEY=sk_live_x STRIPE_PUBLISHABLE_KEY=pk_live_x \
	  STRIPE_WEBHOOK_SECRET=whsec_x METRICS_TOKEN=metrics_x $(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) .local

# mypy's Django plugin loads the settings but connects to nothing: placeholder URLs suffice.
typecheck: $(STAMP)
	@DATABASE_URL=postgres://typecheck@localhost/typecheck REDIS_URL=redis://localhost:1/0 \
	  $(VENV)/bin/mypy core accounts audit groups members keys billing usage alerts gateway management portal
