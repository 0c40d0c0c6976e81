# CI stand-in for the official rust:<version>-bookworm image, for machines that reach no
# container registry (.ci/docker.sh tags it with the name the Dockerfile's FROM uses): the
# debian:bookworm-slim stand-in, the C toolchain the official image has (gcc, libc6-dev,
# pkg-config), and this machine's own Rust toolchain, copied into the build context as
# toolchain/. Nothing else of the official image is used by the Dockerfile.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain/ /usr/local/rust/
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
