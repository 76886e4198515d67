from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line, with any `extra=` fields included."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


# Paths whose last part is a bearer secret: an invitation link, allauth's password-reset and
# e-mail-confirmation links. Whoever reads the log could otherwise join the group, set the password
# or confirm the address.
_SECRET_PATHS = re.compile(
    r"(/invitations/|/accounts/password/reset/key/|/accounts/confirm-email/)[^/\s?#\"']+"
)
# Query parameters that carry secrets (Stripe appends `…_client_secret=` to its return URLs).
_SECRET_PARAMS = re.compile(
    r"([?&][^=&\s#\"']*(?:secret|token|password|signature)[^=&\s#\"']*=)[^&\s#\"']+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """Return `text` (a path, a URL, a log line) with the secrets in links replaced."""
    if "/" not in text and "=" not in text:
        return text
    return _SECRET_PARAMS.sub(rf"\1{REDACTED}", _SECRET_PATHS.sub(rf"\1{REDACTED}", text))


class RedactSecretsFilter(logging.Filter):
    """Redact secrets from a record's message, its arguments and a `path` field.

    On the console handler, so it covers every logger that writes there: the portal's request log
    (portal.request), the gateway's (portal.gateway), Django's (django.request, django.server) and
    uvicorn's access log, whose arguments are (client, method, path with query, version, status).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        path = getattr(record, "path", None)
        if isinstance(path, str):
            record.path = redact(path)
        return True
