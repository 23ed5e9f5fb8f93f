# The AgentFlow signal server as a small image.
#
#   docker build -f examples/docker/signal.Dockerfile -t agentflow-signal .
#   docker run -p 7070:7070 -p 3478:3478/udp \
#     -e AGENTFLOW_SIGNAL__AUTH__TOKEN="$(openssl rand -hex 24)" agentflow-signal
#
# Stage 1 builds a release binary with the Swift standard library linked
# statically; stage 2 is Debian slim with only the C libraries the binary links
# (OpenSSL, nghttp2, libcurl, hiredis), run as a non-root user.

FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      pkg-config libssl-dev libnghttp2-dev libcurl4-openssl-dev libhiredis-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not refetch them.
COPY Package.swift ./
RUN swift package resolve
COPY Sources ./Sources
COPY Plugins ./Plugins
COPY Protos ./Protos
RUN swift build -c release --static-swift-stdlib --product agentflow \
 && strip -o /agentflow "$(swift build -c release --show-bin-path)/agentflow"

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libssl3 libnghttp2-14 libcurl4 libhiredis0.14 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin agentflow
# One self-contained file: the Swift runtime is linked in, the OpenAPI document compiled in.
COPY --from=build /agentflow /usr/local/bin/agentflow
# Defaults plus these overrides; mount a file and pass --config to change more.
# AGENTFLOW_SIGNAL__AUTH__TOKEN must be given at run time: on a non-loopback
# address the server refuses to start without a cluster token.
ENV AGENTFLOW_SIGNAL__HTTP__LISTEN=0.0.0.0:7070 \
    AGENTFLOW_SIGNAL__STUN__LISTEN=0.0.0.0:3478
USER agentflow
EXPOSE 7070/tcp 3478/udp
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS http://127.0.0.1:7070/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/agentflow", "signal"]
