# One image for the operator (`mlgitops operator`) and every model pod: the init container
# (`mlgitops fetch-model`) and the server (`mlgitops serve`). Entrypoint `mlgitops`; the pods and
# the operator Deployment pass the subcommand (see mlgitops/core/k8s_objects.py and
# manifests/install/operator.yaml, which name it `mlgitops:0.1.0`).
#
#   docker build -t mlgitops:0.1.0 .
#
# The test machines have no container engine: `make image` builds the equivalent without one
# (mlgitops/devcluster/image.py: debootstrap, a venv at /opt/venv, umoci), and
# tests/k8s/realnode/test_image.py checks that it has this file's user, entry point, environment
# and Python packages; the real-node lane runs it on a real kubelet. Keep the two in step.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    HOME=/tmp

# git for fetch-model and the operator's clone; ssh for ssh:// remotes; CA certificates for https.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mlgitops ./mlgitops
# The operator extra adds the kubernetes client (not 37.0.2: it breaks mlflow's graphene) and kopf.
RUN pip install ".[operator]" && rm -rf /src

# Non-root, with the uid/gid the rendered pods run as (runAsUser/fsGroup 10001).
RUN groupadd --gid 10001 mlgitops \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin mlgitops
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080
ENTRYPOINT ["mlgitops"]
CMD ["--help"]
