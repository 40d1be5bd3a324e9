# The Drover node image, for hosts that can pull from a registry.
#
#   docker build -t drover .
#   docker run -d --name drover1 \
#     -v "$PWD/config/container.toml:/etc/drover/drover.toml:ro" \
#     -v drover1-data:/var/lib/drover \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -p 127.0.0.1:7700:7700 -p 127.0.0.1:7702:7702 \
#     drover
#
# The agent runs as the unprivileged user 65532 and starts each job as a
# sibling container through the host's Docker socket, so the container needs
# the socket's group (`--group-add`, `group_add:` in docker-compose.yml).
# Whoever can use that socket controls the host: the non-root user limits what
# a bug in the agent can do inside its own container, not on the host.
#
# Without a registry, `bash docker/build-local-image.sh` builds the same
# runtime image from a binary built on the host (see the README).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin drover \
 && strip --strip-debug target/release/drover \
 && install -D -m 0755 target/release/drover /out/drover \
 && mkdir -p /out/data

# glibc, libgcc_s and a `nonroot` user (65532); nothing else, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/drover /usr/local/bin/drover
COPY --from=build --chown=65532:65532 /out/data /var/lib/drover
# Plain log lines: a container's log is a file, not a terminal.
ENV NO_COLOR=1
USER 65532:65532
WORKDIR /var/lib/drover
# 7700 client gRPC API, 7701 Raft peers, 7702 REST API (the listen.* keys).
EXPOSE 7700 7701 7702
VOLUME /var/lib/drover
ENTRYPOINT ["/usr/local/bin/drover"]
CMD ["agent", "--config", "/etc/drover/drover.toml"]
