# ner-quality ML backend for Label Studio.
#
#   docker build -t ner-quality .                                   # CPU torch (default)
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130 -t ner-quality:gpu .
#
# torch 2.13.0 comes in CUDA 13.0 (cu130, NVIDIA driver >= 580; also what PyPI's wheel bundles)
# and CUDA 12.6 (cu126: older drivers and pre-Turing GPUs); cu124, cu128 and cu129 have no 2.13.0.
# docker-compose.gpu.yml builds the cu130 image and reserves the GPU.
#
# The image serves `gunicorn -w 1 --threads 8 ls_backend.wsgi:app` on :9090.  ONE worker process:
# the scoring queue, trainings and model cache live in it; threads serve concurrent requests.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MODEL_DIR=/data/models \
    PORT=9090

WORKDIR /app
# torch first, from the chosen index: an unpinned torch from PyPI pulls a multi-GB CUDA build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY analysis ./analysis
COPY ls_backend ./ls_backend
COPY label_config ./label_config
RUN pip install . && useradd --create-home --uid 1000 nerq && mkdir -p /data/models \
    && chown -R nerq /data
USER nerq
VOLUME ["/data/models"]
EXPOSE 9090

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request as u,base64; r=u.Request('http://127.0.0.1:%s/health' % os.environ.get('PORT','9090')); a=os.environ.get('BASIC_AUTH_USER'); a and r.add_header('Authorization','Basic '+base64.b64encode(('%s:%s'%(a,os.environ.get('BASIC_AUTH_PASS',''))).encode()).decode()); u.urlopen(r, timeout=4)"

CMD ["sh", "-c", "exec gunicorn --workers 1 --threads ${THREADS:-8} --worker-class gthread --timeout 120 --bind 0.0.0.0:${PORT} 'ls_backend.wsgi:app'"]
