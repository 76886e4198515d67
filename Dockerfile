# Production image: the web, worker and beat services of docker-compose.yml all run it.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_ENV=production STATIC_ROOT=/app/staticfiles

WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY requirements.lock pyproject.toml ./
# Bytecode is written at build time (PYTHONDONTWRITEBYTECODE keeps the running image read-only):
# without it every worker compiles every module again at each start, seconds before it answers.
RUN uv pip install --system --no-cache --compile-bytecode -r requirements.lock
COPY . .
RUN python -m compileall -q -j 0 .
# collectstatic needs settings to load, not real services or secrets.
RUN SECRET_KEY=build ALLOWED_HOSTS=build DATABASE_URL=postgres://build@localhost/build \
    REDIS_URL=redis://localhost:6379/0 EMAIL_URL=smtp://localhost:25 STRIPE_SECRET_KEY=build \
    STRIPE_PUBLISHABLE_KEY=build STRIPE_WEBHOOK_SECRET=build \
    python manage.py collectstatic --no-input -v 0
RUN useradd --system --uid 10001 portal && chown -R portal /app
USER portal
EXPOSE 8000
# Keep-alive longer than a load balancer's idle timeout (60 s on most), so the balancer never
# reuses a connection uvicorn is closing. The workers share one Prometheus directory, emptied at
# each start (see gateway/metrics.py). --no-proxy-headers: the application itself trusts
# X-Forwarded-For only from TRUSTED_PROXIES (portal/proxy.py), so uvicorn must not trust it too.
# The tests and benchmarks run this same command (portal/launcher.py's web_command; the Procfile
# too): tests/portal/test_launcher.py fails when one of them changes without the others.
ENV PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
CMD ["sh", "-c", "rm -rf \"$PROMETHEUS_MULTIPROC_DIR\" && mkdir -p \"$PROMETHEUS_MULTIPROC_DIR\" && exec uvicorn portal.asgi:application --host 0.0.0.0 --port 8000 --workers 2 --lifespan off --no-access-log --no-proxy-headers --timeout-keep-alive 75"]
