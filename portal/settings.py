"""Settings for the portal, read from the environment (see README "Environment variables").

DJANGO_ENV selects the mode:
- development (default): safe, obvious defaults; e-mail printed to the console.
- test: like development, with fast password hashing; set by `make test`.
- production: every secret must come from the environment; `check --deploy` passes.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from urllib.parse import unquote

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
LOCAL_DIR = Path(os.environ.get("PORTAL_LOCAL") or BASE_DIR / ".local")  # as portal.devstack

env = environ.Env()

# A running `make run` writes the URLs of the embedded services it started here, so that
# `python manage.py …` in another terminal talks to the same servers.
_services_env = LOCAL_DIR / "services.env"
if _services_env.exists() and "DATABASE_URL" not in os.environ:
    environ.Env.read_env(str(_services_env))

DJANGO_ENV = env.str("DJANGO_ENV", default="development")
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(
        f"DJANGO_ENV must be development, test or production, not {DJANGO_ENV!r}"
    )
PRODUCTION = DJANGO_ENV == "production"
TESTING = DJANGO_ENV == "test"


def _required(name: str, dev_default: str) -> str:
    """Return an environment value; in production a missing one stops the start-up."""
    value = os.environ.get(name)
    if value:
        return value
    if PRODUCTION:
        raise ImproperlyConfigured(
            f"{name} is not set. DJANGO_ENV=production needs it in the environment "
            "(see README, 'Environment variables')."
        )
    return dev_default


SECRET_KEY = _required("SECRET_KEY", "dev-insecure-secret-key-do-not-use-in-production-0123456789")
DEBUG = env.bool("DEBUG", default=not PRODUCTION and not TESTING)
ALLOWED_HOSTS = env.list(
    "ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"]
)
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is not set. DJANGO_ENV=production needs it.")
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:" + env.str("PORT", default="8000"))

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_countries",
    "django_celery_beat",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "portal",
    "accounts",
    "audit",
    "groups",
    "members",
    "keys",
    "billing",
    "usage",
    "alerts",
    "gateway",
    "management",
]

MIDDLEWARE = [
    "portal.middleware.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
            ],
            "builtins": ["billing.templatetags.money"],
        },
    },
]

# --- Data stores ---------------------------------------------------------------------------
_database_url = os.environ.get("DATABASE_URL")
if not _database_url:
    raise ImproperlyConfigured(
        "DATABASE_URL is not set. Start the portal with `make run` (it starts an embedded "
        "PostgreSQL) or point DATABASE_URL at a PostgreSQL server."
    )
_db = environ.Env.db_url_config(_database_url)
# A unix-socket directory arrives percent-encoded in the host part (postgres://u@%2Fpath/db).
_db["HOST"] = unquote(_db.get("HOST") or "")
_db["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
_db["CONN_HEALTH_CHECKS"] = True
_db.setdefault("OPTIONS", {})["connect_timeout"] = env.int("DB_CONNECT_TIMEOUT", default=3)
# Tests of separate checkouts may share one server: keep their test databases apart.
_db["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=f"test_{_db['NAME']}")}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Optional read replica (a PostgreSQL hot standby of DATABASE_URL): only the reads that chose it
# go there (core/replica.py: Usage Metrics and its CSV exports, invoice history, the Management
# API's GET endpoints); everything else, and every write, stays on the primary.
DATABASE_REPLICA_URL = os.environ.get("DATABASE_REPLICA_URL", "")
# Past this lag (seconds) — or when the replica does not answer — those reads go to the primary.
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=10.0)
# Each process measures the lag at most this often (the measurement is exported on /metrics).
DATABASE_REPLICA_LAG_CACHE_SECONDS = env.float("DATABASE_REPLICA_LAG_CACHE_SECONDS", default=2.0)
# After a successful write request, that client reads the primary this long (read-your-writes):
# by then the replica has what it wrote, or is past the lag bound and not read.
DATABASE_REPLICA_PIN_SECONDS = env.float(
    "DATABASE_REPLICA_PIN_SECONDS",
    default=DATABASE_REPLICA_MAX_LAG_SECONDS + DATABASE_REPLICA_LAG_CACHE_SECONDS,
)
DATABASE_ROUTERS: list[str] = []
if DATABASE_REPLICA_URL:
    _replica = environ.Env.db_url_config(DATABASE_REPLICA_URL)
    _replica["HOST"] = unquote(_replica.get("HOST") or "")
    _replica["CONN_MAX_AGE"] = _db["CONN_MAX_AGE"]
    _replica["CONN_HEALTH_CHECKS"] = True
    # A replica that is gone must cost a page little: a short connect timeout, then the primary.
    _replica.setdefault("OPTIONS", {})["connect_timeout"] = env.int(
        "DB_REPLICA_CONNECT_TIMEOUT", default=1
    )
    # Under Django's test runner the alias reads the test database itself.
    _replica["TEST"] = {"MIRROR": "default"}
    DATABASES["replica"] = _replica
    DATABASE_ROUTERS = ["core.replica.ReplicaRouter"]
    MIDDLEWARE.append("core.replica.ReplicaPinMiddleware")  # read-your-writes

REDIS_URL = _required("REDIS_URL", "")
if not REDIS_URL:
    raise ImproperlyConfigured(
        "REDIS_URL is not set. Start the portal with `make run` (it starts an embedded Redis) "
        "or point REDIS_URL at a Redis server."
    )
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="portal"),
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# --- Celery --------------------------------------------------------------------------------
# The broker is a single Redis (or Sentinel): kombu's Redis transport does not speak Redis
# Cluster, so a deployment whose REDIS_URL becomes a cluster keeps the broker on a Redis of its own.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task whose worker died unacknowledged is delivered again after this many seconds.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
}
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=TESTING)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Queues (docs/scaling.md, "Celery queues"): a worker takes the queues it is given (`-Q`); one
# worker may take them all (`make run`, docker-compose's `worker`), or one per queue (the `scale`
# profile), so that a flood on one queue never delays the others: an e-mail backlog never delays
# a top-up. portal/launcher.py's CELERY_QUEUES (the Procfile's `-Q`) lists the same names.
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name), routing_key=name)
    for name in ("billing", "email", "rollups", "gateway", "default")
)
CELERY_TASK_DEFAULT_QUEUE = "default"
# Within a queue, Redis serves priority 0 (the default) before 3, 6 and 9 (kombu's steps): the
# month-end fan-out of one invoice task per group is queued at 9, so a top-up or a purchase queued
# behind thousands of invoices still runs next.
_BULK = 9
# Every task, by name, and its queue. tests/portal/test_celery_queues.py fails for a task that is
# not here (so a new task cannot be forgotten on `default`) and for a name that is no task.
CELERY_TASK_ROUTES: dict[str, dict[str, str | int]] = {
    # billing: money moves and what follows a payment. Short; must run within seconds.
    "billing.tasks.auto_top_up": {"queue": "billing"},
    "billing.tasks.charge_payment": {"queue": "billing"},
    "billing.tasks.credit_watch": {"queue": "billing"},
    "billing.tasks.sync_customer": {"queue": "billing"},
    "billing.tasks.credit_lots_tick": {"queue": "billing"},
    "billing.tasks.generate_invoices_due": {"queue": "billing", "priority": _BULK},
    "billing.tasks.generate_invoice": {"queue": "billing", "priority": _BULK},
    "billing.tasks.invoice_mirror_to_stripe": {"queue": "billing", "priority": _BULK},
    # email: every message that leaves by SMTP, and the alerts' webhook deliveries (HTTP posts to
    # customers' endpoints): slow, retried, bursty, never on a money path.
    "billing.tasks.email_admins_about_payment": {"queue": "email"},
    "billing.tasks.email_admins_about_dispute": {"queue": "email"},
    "billing.tasks.email_admins_top_up_capped": {"queue": "email"},
    "billing.tasks.email_low_balance": {"queue": "email"},
    "billing.tasks.email_credit_expiry_reminder": {"queue": "email"},
    "members.tasks.send_invitation_email": {"queue": "email"},
    "alerts.tasks.email_alert": {"queue": "email"},
    "alerts.tasks.deliver_webhook": {"queue": "email"},
    "alerts.tasks.webhooks_retry_due": {"queue": "email"},
    # rollups: the usage rollups (and the partitions and retention of usage events): long scans.
    "usage.tasks.rollup_usage": {"queue": "rollups"},
    "usage.tasks.usage_partitions_ahead": {"queue": "rollups"},
    "billing.tasks.usage_retention": {"queue": "rollups"},
    # gateway: async chat completions jobs (minutes each, upstream-bound) and their sweeps.
    "gateway.tasks.run_async_job": {"queue": "gateway"},
    "gateway.tasks.async_sweep": {"queue": "gateway"},
    "gateway.tasks.async_purge": {"queue": "gateway"},
    # default: housekeeping, audits and alert evaluation (its deliveries go on `email`).
    "portal.tasks.housekeeping": {"queue": "default"},
    "keys.tasks.key_grace_sweep": {"queue": "default"},
    "billing.tasks.ledger_reconcile": {"queue": "default"},
    "alerts.tasks.alerts_watch": {"queue": "default"},
}
# Every periodic job lives here, each with a comment saying when it runs.
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    # Every 10 minutes: delete expired sessions.
    "portal-housekeeping": {
        "task": "portal.tasks.housekeeping",
        "schedule": crontab(minute="*/10"),
    },
    # Hourly at :17: prove balance = sum of ledger entries for every account (alerts if not).
    "billing-ledger-reconcile": {
        "task": "billing.tasks.ledger_reconcile",
        "schedule": crontab(minute="17"),
    },
    # Daily at 03:41 UTC: create the usage events' monthly partitions ahead (this month and the
    # next USAGE_PARTITIONS_AHEAD; usage/partitions.py).
    "usage-partitions-ahead": {
        "task": "usage.tasks.usage_partitions_ahead",
        "schedule": crontab(minute="41", hour="3"),
    },
    # Daily at 04:41 UTC: drop the raw usage months older than USAGE_RAW_RETENTION_MONTHS whose
    # rollups and invoices are final (never before; billing/usage_retention.py). Off when unset.
    "usage-retention": {
        "task": "billing.tasks.usage_retention",
        "schedule": crontab(minute="41", hour="4"),
    },
    # Every minute: recompute the last two hours of usage rollups for the dashboards.
    "usage-rollup": {
        "task": "usage.tasks.rollup_usage",
        "schedule": crontab(minute="*"),
    },
    # After each billing period closes (the 1st of the month, or Monday, at 00:10 UTC): issue the
    # invoices of the period that just ended, one task per group.
    "billing-invoices": {
        "task": "billing.tasks.generate_invoices_due",
        "schedule": crontab(minute="10", hour="0", day_of_month="1")
        if env.str("INVOICE_PERIOD", default="month") == "month"
        else crontab(minute="10", hour="0", day_of_week="1"),
    },
    # Every minute: start automatic top-ups that are due (balance under threshold, or a declined
    # one whose back-off has passed) and send low-balance alerts.
    "billing-credit-watch": {
        "task": "billing.tasks.credit_watch",
        "schedule": crontab(minute="*"),
    },
    # Every minute: queue again the async chat completions jobs whose worker died (lease over) or
    # that no worker took; finish or fail those that cannot run again (gateway/async_runner.py).
    "gateway-async-sweep": {
        "task": "gateway.tasks.async_sweep",
        "schedule": crontab(minute="*"),
    },
    # Every minute: forget old secrets whose rotation grace period is over and audit their end
    # (the gateway already refuses them at the end: keys/cache.py).
    "keys-grace-sweep": {
        "task": "keys.tasks.key_grace_sweep",
        "schedule": crontab(minute="*"),
    },
    # Every minute: close promotional credit lots whose expiry has passed (their remaining
    # leaves the balance as an `expiry` entry) and send the 7-day expiry reminders
    # (billing/credits.py).
    "billing-credit-lots": {
        "task": "billing.tasks.credit_lots_tick",
        "schedule": crontab(minute="*"),
    },
    # Every minute: evaluate the spend alerts of groups that have enabled ones (budget
    # percentages, balance levels); each crossing fires once per window (alerts/services.py).
    "alerts-watch": {
        "task": "alerts.tasks.alerts_watch",
        "schedule": crontab(minute="*"),
    },
    # Every minute: send the webhook deliveries whose back-off has passed (1 min … 12 h).
    "alerts-webhook-retries": {
        "task": "alerts.tasks.webhooks_retry_due",
        "schedule": crontab(minute="*"),
    },
    # Hourly at :23: delete async jobs older than ASYNC_RESULT_TTL (their usage stays).
    "gateway-async-purge": {
        "task": "gateway.tasks.async_purge",
        "schedule": crontab(minute="23"),
    },
}

# --- Accounts (django-allauth) -------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "account_login"
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.SignupForm"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = "mandatory"
ACCOUNT_EMAIL_VERIFICATION_BY_CODE_ENABLED = False
ACCOUNT_CONFIRM_EMAIL_ON_GET = False
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_LOGIN_ON_PASSWORD_RESET = False
ACCOUNT_PREVENT_ENUMERATION = True
ACCOUNT_EMAIL_SUBJECT_PREFIX = "[Portal] "
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if PRODUCTION else "http"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
# allauth keeps its rate-limit counters in the default cache (Redis).
ACCOUNT_RATE_LIMITS: dict[str, str | bool] = {
    "login_failed": "10/m/ip,5/5m/key",
    "signup": "20/m/ip",
    "confirm_email": "1/3m/key",
    "reset_password": "20/m/ip,5/m/key",
    "reset_password_from_key": "20/m/ip",
    "change_password": "5/m/user",
}
if TESTING:
    ACCOUNT_RATE_LIMITS = {k: "1000/m/ip" for k in ACCOUNT_RATE_LIMITS} | {"confirm_email": False}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env.str("MFA_TOTP_ISSUER", default="Portal")

# --- E-mail --------------------------------------------------------------------------------
_email_url = os.environ.get("EMAIL_URL")
if _email_url:
    vars().update(environ.Env.email_url_config(_email_url))
elif PRODUCTION:
    raise ImproperlyConfigured("EMAIL_URL is not set. DJANGO_ENV=production needs an SMTP server.")
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Portal <no-reply@portal.localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Stripe --------------------------------------------------------------------------------
# With no real key the project runs against localstripe on loopback (see portal/devstack.py).
STRIPE_SECRET_KEY = _required("STRIPE_SECRET_KEY", "sk_test_localstripe")
STRIPE_PUBLISHABLE_KEY = _required("STRIPE_PUBLISHABLE_KEY", "pk_test_localstripe")
STRIPE_WEBHOOK_SECRET = _required("STRIPE_WEBHOOK_SECRET", "whsec_localstripe_dev")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="")  # empty: api.stripe.com
STRIPE_JS_URL = env.str(
    "STRIPE_JS_URL",
    default=(STRIPE_API_BASE.rstrip("/") + "/js.stripe.com/v3/")
    if STRIPE_API_BASE
    else "https://js.stripe.com/v3/",
)

# Credit purchases (dollars): the smallest and largest amount one purchase may be.
BILLING_MIN_PURCHASE = env.int("BILLING_MIN_PURCHASE", default=5)
BILLING_MAX_PURCHASE = env.int("BILLING_MAX_PURCHASE", default=10_000)
# Hours to wait before retrying a declined automatic top-up: 1st, 2nd, 3rd… retry (last repeats).
AUTO_TOP_UP_RETRY_HOURS = [
    int(h) for h in env.list("AUTO_TOP_UP_RETRY_HOURS", default=["1", "4", "12", "24"])
]
# At most this many automatic top-ups per group in any 24 hours (a runaway spend, or settings
# that slipped past the form, cannot charge the card every minute); Admins are told once a day.
AUTO_TOPUP_DAILY_LIMIT = env.int("AUTO_TOPUP_DAILY_LIMIT", default=5)
# A promotional lot stops being drawn at its expiry; its remaining leaves the balance this long
# after, so usage dated before the expiry but metered late (batched or write-behind metering) is
# attributed to it first (billing/credits.py).
CREDIT_EXPIRY_GRACE_SECONDS = env.int("CREDIT_EXPIRY_GRACE_SECONDS", default=120)

# --- Product settings ----------------------------------------------------------------------
API_KEY_PREFIX = env.str("API_KEY_PREFIX", default="pplx-")
# Management API keys (issue #9) are a separate kind of key with their own prefix, so an inference
# key can never be mistaken for one (the inference body alphabet has no "-").
MANAGEMENT_KEY_PREFIX = env.str("MANAGEMENT_KEY_PREFIX", default=API_KEY_PREFIX + "admin-")
# Requests per minute allowed per management key (a Redis counter per key and minute).
MANAGEMENT_API_RATE_LIMIT = env.int("MANAGEMENT_API_RATE_LIMIT", default=300)
# Invitation e-mails (new or resent, page or Management API) allowed per sender and per group in
# any 24 hours, so the portal cannot be used to mail arbitrary addresses in bulk.
INVITATIONS_PER_USER_PER_DAY = env.int("INVITATIONS_PER_USER_PER_DAY", default=20)
INVITATIONS_PER_GROUP_PER_DAY = env.int("INVITATIONS_PER_GROUP_PER_DAY", default=50)
# Gateway: how long a worker trusts its in-memory copy of a key (revocation visible within it).
GATEWAY_KEY_CACHE_SECONDS = env.float("GATEWAY_KEY_CACHE_SECONDS", default=0.5)
# Database look-ups of unknown keys allowed per client address (IPv6: per /64) and minute; past
# it, unknown keys from that address get 429 until the minute ends (see gateway/invalid_keys.py).
GATEWAY_INVALID_KEYS_PER_MINUTE = env.int("GATEWAY_INVALID_KEYS_PER_MINUTE", default=20)
GATEWAY_MAX_BODY_BYTES = env.int("GATEWAY_MAX_BODY_BYTES", default=1_048_576)
GATEWAY_UPSTREAM_TIMEOUT = env.float("GATEWAY_UPSTREAM_TIMEOUT", default=120.0)
GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env.float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", default=5.0)
GATEWAY_DB_POOL_SIZE = env.int("GATEWAY_DB_POOL_SIZE", default=10)
# How a metered request is recorded before its answer's last byte (see gateway/metering.py):
# "commit" = the usage event and ledger debit are committed to PostgreSQL first; "stream" = the
# usage goes into a Redis stream first and the gateway workers settle it into PostgreSQL in
# batches (idempotent by request id) within GATEWAY_SETTLE_INTERVAL — faster, and as durable as
# Redis is configured (`appendonly yes`). docs/scaling.md compares the two.
GATEWAY_METERING = env.str("GATEWAY_METERING", default="commit")
if GATEWAY_METERING not in ("commit", "stream"):
    raise ImproperlyConfigured("GATEWAY_METERING must be “commit” or “stream”.")
GATEWAY_SETTLE_INTERVAL = env.float("GATEWAY_SETTLE_INTERVAL", default=0.1)
GATEWAY_BASE_URL = env.str("GATEWAY_BASE_URL", default=SITE_URL)

# --- Alerts and webhooks (alerts/) ---------------------------------------------------------
# Webhook URLs must be https; plain http only to localhost/127.0.0.1, and only when this is on
# (default: on outside production, where it also lets deliveries reach local test servers).
ALERTS_WEBHOOK_ALLOW_HTTP = env.bool("ALERTS_WEBHOOK_ALLOW_HTTP", default=not PRODUCTION)
# Seconds one webhook try may take (connect + response) before it counts as failed.
ALERTS_WEBHOOK_TIMEOUT = env.float("ALERTS_WEBHOOK_TIMEOUT", default=10.0)

# Spend controls (docs/gateway.md, "Overdraft bound"): every billable request reserves an estimate
# of its cost at admission — from max_tokens / max_output_tokens, or this many output tokens when
# absent, at the model's prices plus request and tool fees, at most GATEWAY_RESERVATION_CAP_MICROS
# — against its group's balance and hard budgets. A group's balance (and a hard budget) may go at
# most GATEWAY_OVERDRAFT_BOUND_MICROS past zero (past its amount) through requests whose cost is
# within their reservation. A reservation its worker never gave back expires after
# GATEWAY_RESERVATION_SECONDS (async jobs: their lease × attempts + requeue time).
GATEWAY_OVERDRAFT_BOUND_MICROS = env.int("GATEWAY_OVERDRAFT_BOUND_MICROS", default=0)
GATEWAY_RESERVATION_CAP_MICROS = env.int("GATEWAY_RESERVATION_CAP_MICROS", default=2_000_000)
GATEWAY_RESERVATION_DEFAULT_OUTPUT_TOKENS = env.int(
    "GATEWAY_RESERVATION_DEFAULT_OUTPUT_TOKENS", default=4096
)
GATEWAY_RESERVATION_SECONDS = env.int("GATEWAY_RESERVATION_SECONDS", default=1800)
# Async chat completions (/async/chat/completions, gateway/async_runner.py): results are kept
# ASYNC_RESULT_TTL seconds (Perplexity: 7 days); a job's upstream call may take
# ASYNC_UPSTREAM_TIMEOUT seconds, and a worker holds a job for that plus two minutes (its lease)
# before the sweeper treats it as dead; a job is run at most ASYNC_JOB_MAX_ATTEMPTS times; a job no
# worker took is queued again after ASYNC_REQUEUE_AFTER seconds.
ASYNC_RESULT_TTL = env.int("ASYNC_RESULT_TTL", default=7 * 86400)
ASYNC_UPSTREAM_TIMEOUT = env.float("ASYNC_UPSTREAM_TIMEOUT", default=1800.0)
ASYNC_JOB_LEASE = env.int("ASYNC_JOB_LEASE", default=int(ASYNC_UPSTREAM_TIMEOUT) + 120)
ASYNC_JOB_MAX_ATTEMPTS = env.int("ASYNC_JOB_MAX_ATTEMPTS", default=3)
ASYNC_REQUEUE_AFTER = env.int("ASYNC_REQUEUE_AFTER", default=120)
# Usage by end user and tag (usage/attribution.py, usage/rollups.py): per group and UTC day, the
# first USAGE_END_USERS_PER_DAY end users, USAGE_TAG_KEYS_PER_DAY tag keys and USAGE_TAGS_PER_DAY
# tag pairs seen roll up under their own names; later ones roll up as "(other)" (the raw usage
# events keep every value). This bounds the rollup rows a client can cause.
USAGE_END_USERS_PER_DAY = env.int("USAGE_END_USERS_PER_DAY", default=100)
USAGE_TAG_KEYS_PER_DAY = env.int("USAGE_TAG_KEYS_PER_DAY", default=20)
USAGE_TAGS_PER_DAY = env.int("USAGE_TAGS_PER_DAY", default=200)
# Usage events are partitioned by month (usage/partitions.py): the beat task creates the current
# month's partition and the next USAGE_PARTITIONS_AHEAD months' (a default partition takes anything
# else). USAGE_RAW_RETENTION_MONTHS: drop the raw events of months that ended more than that many
# months ago, once their rollups are complete and every invoice covering them is issued
# (billing/usage_retention.py); unset keeps them for ever.
USAGE_PARTITIONS_AHEAD = env.int("USAGE_PARTITIONS_AHEAD", default=3)
USAGE_RAW_RETENTION_MONTHS: int | None = env.int("USAGE_RAW_RETENTION_MONTHS", default=None)
if USAGE_RAW_RETENTION_MONTHS is not None and USAGE_RAW_RETENTION_MONTHS < 1:
    raise ImproperlyConfigured("USAGE_RAW_RETENTION_MONTHS must be at least 1 (or unset).")
# Prometheus metrics at /metrics: readable with `Authorization: Bearer <token>` when set, else only
# from the loopback interface (see gateway/metrics.py). Required in production: behind a proxy on
# the same host every request would come from loopback.
METRICS_TOKEN = _required("METRICS_TOKEN", "")
OPERATOR_NAME = env.str("OPERATOR_NAME", default="Portal Operator")
OPERATOR_ADDRESS = env.str("OPERATOR_ADDRESS", default="")
OPERATOR_TAX_ID = env.str("OPERATOR_TAX_ID", default="")
PORTAL_NAME = env.str("PORTAL_NAME", default="Portal")

# --- Invoices ------------------------------------------------------------------------------
# "month" (calendar months, UTC) or "week" (ISO weeks, Monday 00:00 UTC).
INVOICE_PERIOD = env.str("INVOICE_PERIOD", default="month")
if INVOICE_PERIOD not in ("month", "week"):
    raise ImproperlyConfigured('INVOICE_PERIOD must be "month" or "week".')
# How many earlier periods are checked for usage that arrived after their invoice was issued.
INVOICE_LATE_USAGE_PERIODS = env.int("INVOICE_LATE_USAGE_PERIODS", default=2)
# Mirror each invoice to Stripe (invoice items + invoice paid out of band) so the customer also has
# Stripe's hosted copy. localstripe has no invoices, so it is off whenever localstripe is in use (an
# API base is set, or the placeholder key is: tests and development).
INVOICE_STRIPE_MIRROR = env.bool(
    "INVOICE_STRIPE_MIRROR",
    default=not STRIPE_API_BASE and STRIPE_SECRET_KEY != "sk_test_localstripe",
)

# --- Internationalisation ------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files --------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(LOCAL_DIR / "staticfiles"))
# Outside production, serve static files straight from the source folders (no collectstatic).
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- Security ------------------------------------------------------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Load balancers / reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed:
# IPs or networks (CIDR), comma-separated. The client's address is read from X-Forwarded-For, from
# the right, past these; from any other peer the headers are ignored (portal/proxy.py).
TRUSTED_PROXIES: list[str] = []
for _proxy in filter(
    None, (p.strip() for p in env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"]))
):
    try:
        TRUSTED_PROXIES.append(str(ipaddress.ip_network(_proxy, strict=False)))
    except ValueError:
        raise ImproperlyConfigured(
            f"TRUSTED_PROXIES: {_proxy!r} is not an IP address or a network (CIDR)."
        ) from None

# Content-Security-Policy (django-csp): scripts only from our own static files — no inline
# script, no inline event handler, no eval — so injected markup cannot run. Inline *styles* stay
# allowed (style attributes in templates, and the <style> htmx adds for its indicators); they
# cannot run code. The card pages add the Stripe.js origin (billing.views.allow_stripe_js).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],  # the favicon and the TOTP QR code are data: URIs
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- Logging -------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "portal.logging.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)-5s %(name)s %(message)s"},
    },
    # Every line passes the redaction filter: invitation, password-reset and e-mail-confirmation
    # links (and Stripe's client secrets in return URLs) never reach the log.
    "filters": {"redact_secrets": {"()": "portal.logging.RedactSecretsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["redact_secrets"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        "django.request": {"level": "ERROR"},
        # uvicorn's access log (off: `--no-access-log`; portal.request logs each request) goes
        # through the same handler, and so the same redaction, when it is turned on.
        "uvicorn.access": {"level": "WARNING", "handlers": ["console"], "propagate": False},
    },
}
