# One image for the operator (`mlgitops operator`) and every model pod: the init container
# (`mlgitops fetch-model`) and the server (`mlgitops serve`). Entrypoint `mlgitops`; the pods and
# the operator Deployment pass the subcommand (see mlgitops/core/k8s_objects.py and
# manifests/install/operator.yaml, which name it `mlgitops:0.1.0`).
#
#   docker build -t mlgitops:0.1.0 .
#
# Not built by this repository's tests: the machines that run them have no container engine.
# What the image runs is tested as processes instead (tests/k8s/kubelet.py runs each pod's
# commands from the virtual environment), so the commands, arguments and probes are checked;
# the image itself (packages, user, read-only root filesystem) is not.
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
