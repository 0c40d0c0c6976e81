# CI stand-in for the official nginx image (nginx:stable-bookworm), for machines that reach no
# container registry: Debian's own nginx package on the debian:bookworm-slim stand-in, started
# the way the official image starts it. docker-compose.scale.yml mounts a whole nginx.conf,
# which both run alike (Debian builds nginx with the gRPC and HTTP/2 modules).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* \
 && nginx -V 2>&1 | grep -q http_v2_module
STOPSIGNAL SIGQUIT
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]
