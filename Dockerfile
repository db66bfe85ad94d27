# syntax=docker/dockerfile:1
# adaclip on the official Ray images: the project and all of its dependencies are installed at
# build time, so Ray nodes and pods start with no `runtime_env` pip and no package index.
#
#   target cpu:  rayproject/ray:2.60.0-py311     + CPU-only torch   (heads, CPU workers)
#   target cuda: rayproject/ray:2.60.0-py311-gpu + CUDA torch       (GPU workers)
#
#   docker build --target cpu  -t ghcr.io/YOUR_ORG/adaclip:0.1.0-cpu  .
#   docker build --target cuda -t ghcr.io/YOUR_ORG/adaclip:0.1.0-cuda .
#   docker push ghcr.io/YOUR_ORG/adaclip:0.1.0-cpu && docker push ghcr.io/YOUR_ORG/adaclip:0.1.0-cuda
#
# The tag is pyproject.toml's version; cluster/ names these tags. RAY_VERSION is the Ray of the
# cluster files (KubeRay rayVersion); torch and torchvision are within pyproject.toml's ranges.
# tests/test_cluster_configs.py checks these against pyproject.toml and cluster/.

ARG RAY_VERSION=2.60.0
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
# CUDA 13.0 wheels bring their own CUDA libraries; nodes need an NVIDIA driver >= 580. For older
# drivers: --build-arg TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu128 (if it has the pair).
ARG TORCH_CUDA_INDEX=https://download.pytorch.org/whl/cu130

# The project as a wheel (packages, model configs, Serve's static files; see pyproject.toml).
FROM rayproject/ray:${RAY_VERSION}-py311 AS wheel
COPY --chown=1000:100 . /home/ray/src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels /home/ray/src

# ---- CPU image ---------------------------------------------------------------------------------
FROM rayproject/ray:${RAY_VERSION}-py311 AS cpu
ARG RAY_VERSION
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCH_CPU_INDEX
# torch first, from the CPU index: the project install below keeps it instead of PyPI's CUDA build.
RUN pip install --no-cache-dir --index-url ${TORCH_CPU_INDEX} \
        torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}
# The project with its remaining dependencies; ray, torch and torchvision stay as installed.
RUN --mount=type=bind,from=wheel,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir /tmp/wheels/adaclip-*.whl \
        ray==${RAY_VERSION} torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}
# configs/ for `--config /home/ray/adaclip/configs/...` (the paths cluster/ uses).
COPY --chown=1000:100 configs /home/ray/adaclip/configs
WORKDIR /home/ray/adaclip
RUN python -c "import torch, adaclip, ray_jobs.ingest; from serve.app import build_app; assert torch.version.cuda is None" \
    && python -m ray_jobs.train --help > /dev/null \
    && python -m ray_jobs.ingest --help > /dev/null

# ---- CUDA image --------------------------------------------------------------------------------
FROM rayproject/ray:${RAY_VERSION}-py311-gpu AS cuda
ARG RAY_VERSION
ARG TORCH_VERSION
ARG TORCHVISION_VERSION
ARG TORCH_CUDA_INDEX
RUN pip install --no-cache-dir --index-url ${TORCH_CUDA_INDEX} \
        torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}
RUN --mount=type=bind,from=wheel,source=/home/ray/wheels,target=/tmp/wheels \
    pip install --no-cache-dir /tmp/wheels/adaclip-*.whl \
        ray==${RAY_VERSION} torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}
COPY --chown=1000:100 configs /home/ray/adaclip/configs
WORKDIR /home/ray/adaclip
RUN python -c "import torch, adaclip, ray_jobs.ingest; from serve.app import build_app; assert torch.version.cuda" \
    && python -m ray_jobs.train --help > /dev/null \
    && python -m ray_jobs.ingest --help > /dev/null
