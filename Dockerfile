# syntax=docker/dockerfile:1
# Multi-stage build: one image with auth-service, userinfo-service and health-probe.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p auth-service -p userinfo-service -p health-probe \
 && mkdir -p /out \
 && cp target/release/auth-service target/release/userinfo-service target/release/health-probe /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /data --shell /usr/sbin/nologin app \
 && install -d -m 0700 -o app /data
COPY --from=build /out/ /usr/local/bin/
USER app
WORKDIR /data
VOLUME ["/data"]
ENV LOG_FORMAT=json
EXPOSE 50051 50052 9090
# The compose file picks the service with `command:`.
CMD ["auth-service"]
