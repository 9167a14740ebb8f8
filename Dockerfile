# ImageMatch server. It installs exactly as `make install` does (torch and torchvision first, then the
# package with constraints.txt), from the same Makefile, then serves on 0.0.0.0:8000. Listening beyond
# loopback, it starts only with authentication: pass IMAGEMATCH_API_KEY (see SECURITY.md).
FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends make libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# The torch pair first, in its own layer: it is the largest download and changes least.
COPY Makefile ./
RUN make .venv/.torch
COPY pyproject.toml constraints.txt README.md ./
COPY src ./src
RUN make install

ENV PATH=/app/.venv/bin:$PATH \
    IMAGEMATCH_HOST=0.0.0.0 \
    IMAGEMATCH_DATA_DIR=/data \
    IMAGEMATCH_MODEL_CACHE_DIR=/models
VOLUME ["/data", "/models"]
EXPOSE 8000
CMD ["imagematch", "serve"]
