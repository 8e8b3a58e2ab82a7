# pipebot: one image for every process of the Procfile (release, web, worker).
#   docker build -t pipebot .
#   docker run --rm -e SLACK_BOT_TOKEN=... -e SLACK_APP_TOKEN=... pipebot            # Socket Mode
#   docker run --rm -p 3000:3000 -e SLACK_BOT_TOKEN=... -e SLACK_SIGNING_SECRET=... pipebot  # HTTP
#   docker run --rm -p 3000:3000 pipebot pipebot sandbox --host 0.0.0.0              # no Slack
# compose.yaml runs it with PostgreSQL.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY sandbox ./sandbox
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip wheel --wheel-dir /wheels /wheels/pipebot-*.whl

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIPEBOT_DATA_DIR=/data \
    PORT=3000
# git: the embedded engine's source actions read git repositories.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 pipebot \
    && mkdir -p /data \
    && chown pipebot:pipebot /data
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels pipebot && rm -rf /wheels
WORKDIR /app
USER pipebot
VOLUME ["/data"]
EXPOSE 3000
CMD ["pipebot", "serve"]
