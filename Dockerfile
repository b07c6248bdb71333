# The worker image used by docker-compose.kafka.yml.
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY schemas ./schemas
RUN pip install --no-cache-dir '.[worker]'

# Bind the web server to every interface inside the container so Prometheus
# (another container) can scrape it; the host only sees the published port.
ENV STREAM_MONITOR_WEB_HOST=0.0.0.0 \
    STREAM_MONITOR_WEB_PORT=6066
EXPOSE 6066
ENTRYPOINT ["stream-monitor"]
CMD ["worker"]
