# stream-trainer: the always-on training service. Configure with STREAM_TRAINER_* env vars.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAM_TRAINER_HTTP_PORT=9400 \
    NUMBA_CACHE_DIR=/opt/numba-cache

# A fixed uid so Kubernetes' runAsNonRoot/runAsUser can match it.
RUN groupadd --system --gid 10001 trainer \
    && useradd --system --uid 10001 --gid trainer --no-create-home --shell /usr/sbin/nologin trainer

WORKDIR /src
COPY pyproject.toml README.md ./
COPY stream_trainer ./stream_trainer
RUN pip install . && rm -rf /src/build
# Compile the learner kernels at build time into numba's cache: a read-only container then
# starts with no compile (the cache dir is only read; a stale one is recompiled in memory).
RUN python -c "from stream_trainer.learners import warm_up; warm_up()" \
    && chmod -R a+rX /opt/numba-cache

WORKDIR /home/trainer
USER 10001:10001

EXPOSE 9400
# python's urllib rather than curl: the slim image has no curl, and this adds nothing.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('STREAM_TRAINER_HTTP_PORT', '9400'), timeout=3)"]

# SIGTERM drains: finish the batch in flight, commit, leave the group, exit 0.
STOPSIGNAL SIGTERM
CMD ["stream-trainer", "run"]
