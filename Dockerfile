# One image with auth-service, userinfo-service and health-probe (README: Deployment).
# The build stage compiles them; the runtime stage is FROM scratch: the three binaries, the C
# libraries they link, an empty /data. No shell, no package manager: nothing in it runs but
# what its CMD or HEALTHCHECK names.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own, rebuilt only when a manifest or Cargo.lock
# changes: every workspace member's Cargo.toml with empty crate roots (a member added to the
# workspace must be added here too), built, then our own crates' artifacts dropped so the
# real sources below are compiled afresh whatever their timestamps.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY token/Cargo.toml token/
COPY runtime/Cargo.toml runtime/
COPY sql-backend/Cargo.toml sql-backend/
COPY auth-service/Cargo.toml auth-service/
COPY userinfo-service/Cargo.toml userinfo-service/
COPY all-in-one/Cargo.toml all-in-one/
COPY health-probe/Cargo.toml health-probe/
COPY bench/Cargo.toml bench/
COPY faults/Cargo.toml faults/
RUN for lib in proto token runtime sql-backend auth-service userinfo-service; do \
      mkdir -p $lib/src && touch $lib/src/lib.rs; done \
 && for bin in auth-service userinfo-service all-in-one health-probe bench; do \
      mkdir -p $bin/src && echo 'fn main() {}' > $bin/src/main.rs; done \
 && echo 'fn main() {}' > proto/build.rs \
 && cargo build --release --locked -p auth-service -p userinfo-service -p health-probe \
 && cargo clean --release -p miniprogram-proto -p miniprogram-token -p service-runtime \
      -p sql-backend -p auth-service -p userinfo-service -p health-probe

# Then what the three binaries are built from (not the docs or CI files, so editing those
# rebuilds nothing): the crates and the migrations they embed.
COPY proto/ proto/
COPY token/ token/
COPY runtime/ runtime/
COPY sql-backend/ sql-backend/
COPY auth-service/ auth-service/
COPY userinfo-service/ userinfo-service/
COPY all-in-one/ all-in-one/
COPY health-probe/ health-probe/
COPY bench/ bench/
COPY migrations/ migrations/
# /rootfs becomes the whole runtime image: the binaries, every shared library they load (as
# ldd lists them, with the paths the dynamic loader looks in), /data owned by the service
# user (10001) and private to it, and /tmp.
RUN cargo build --release --locked -p auth-service -p userinfo-service -p health-probe \
 && mkdir -p /rootfs/usr/local/bin \
 && cd target/release \
 && cp auth-service userinfo-service health-probe /rootfs/usr/local/bin/ \
 && for lib in $(ldd auth-service userinfo-service health-probe | grep -o '/[^ ]*' | sort -u); do \
      cp --parents -L "$lib" /rootfs/; done \
 && install -d -m 0700 -o 10001 -g 10001 /rootfs/data \
 && install -d -m 1777 /rootfs/tmp

FROM scratch
COPY --from=build /rootfs/ /
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# Defaults for a container (compose sets them again, explicitly): listen on every interface
# of the container, SQLite in /data, JSON logs. PROBE_ADDR is what the HEALTHCHECK asks; it
# names auth-service, the default command: set PROBE_ADDR=127.0.0.1:50052 when running
# userinfo-service.
ENV AUTH_ADDR=0.0.0.0:50051 \
    AUTH_DATABASE_URL=sqlite:///data/auth.db \
    USERINFO_ADDR=0.0.0.0:50052 \
    USERINFO_DATABASE_URL=sqlite:///data/userinfo.db \
    LOG_FORMAT=json \
    PROBE_ADDR=127.0.0.1:50051
EXPOSE 50051 50052 9090
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=6 CMD ["health-probe"]
# The compose files pick the service with `command:`.
CMD ["auth-service"]
