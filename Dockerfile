# syntax=docker/dockerfile:1
# One image for every gpupool component, `gpupool` as its entry point:
#   gpupool webhook ... | reconciler ... | exporter ... | dashboard ... | apply ...
# Dependencies come from requirements/image.txt, every one pinned with its hashes
# (refresh: bash requirements/lock.sh); the install steps are requirements/install-image.sh,
# which tests/integration/test_chart_image.py also runs as a non-root user.
#
#   docker build -t gpupool:0.1.0 .

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY requirements/ requirements/
COPY pyproject.toml README.md ./
COPY governance/ governance/
COPY admission/ admission/
COPY exporter/ exporter/
COPY dashboard/ dashboard/
# Wheels only (no compiler is needed, nor present in the slim image).
RUN sh requirements/install-image.sh /opt/gpupool /src

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="gpupool" \
      org.opencontainers.image.description="Governed fractional GPU slices on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed uid the chart's securityContext names (runAsUser 10001); no home, no shell.
RUN groupadd --system --gid 10001 gpupool \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin gpupool
COPY --from=build /opt/gpupool /opt/gpupool
ENV PATH=/opt/gpupool/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 10001:10001
ENTRYPOINT ["gpupool"]
CMD ["--help"]
