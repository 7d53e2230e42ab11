# The orchestrator, `slotpack serve`, on the docker backend.
# Built offline by scripts/build-images.sh from the static `slotpack` binary
# (glibc, crt-static, release profile) it copies into target/images/orchestrator;
# tagged slotpack/orchestrator:latest (SLOTPACK_ORCHESTRATOR_IMAGE), as the
# pool image is slotpack/pool:latest.
#
# Run it on the host's network, with the engine's socket and a volume for its
# data:
#
#   docker run -d --name slotpack --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v slotpack-data:/var/lib/slotpack \
#     -v /etc/slotpack/admin-token:/run/secrets/slotpack-admin-token:ro \
#     -e SLOTPACK_ADMIN_TOKEN_FILE=/run/secrets/slotpack-admin-token \
#     slotpack/orchestrator:latest
#
# Why the host's network: the docker backend publishes every pool's agent port
# and slot ports on the host's 127.0.0.1 and reaches them there (agents at
# 127.0.0.1:(POOL_BASE_PORT - 1 - block), tenants for the proxy at
# 127.0.0.1:<slot port>), and it checks that a new pool's ports are free by
# binding them on 127.0.0.1. In a network namespace of its own, the
# container's 127.0.0.1 would be none of these. On the host's network, the
# API (SLOTPACK_LISTEN, default 127.0.0.1:8088) is on the host's loopback as
# it is without a container.
#
# The socket: the orchestrator makes, watches and removes pool containers and
# volumes through it (bollard: DOCKER_HOST, else /var/run/docker.sock). Access
# to it is root on the host; so is this container.
#
# The admin token: from a file (SLOTPACK_ADMIN_TOKEN_FILE or
# `serve --admin-token-file FILE`; a compose secret or a bind mount), or
# SLOTPACK_ADMIN_TOKEN in the environment. None is built in: without one,
# `serve` refuses to start and says so.
#
# Slot uids: as root, `serve` notes its slot uid ranges in
# /run/slotpack/uid-ranges and checks /etc/passwd and running processes.
# In a container that is the container's own (the notes name data dirs by
# their path, so the host's folder cannot be shared): give each deployment on
# one host a SLOT_UID_BASE of its own, away from the host's accounts.
FROM scratch
LABEL managed-by=slotpack org.opencontainers.image.title="slotpack orchestrator"
COPY slotpack /usr/local/bin/slotpack
ENV SLOTPACK_BACKEND=docker \
    SLOTPACK_DATA_DIR=/var/lib/slotpack
VOLUME /var/lib/slotpack
EXPOSE 8088
ENTRYPOINT ["/usr/local/bin/slotpack"]
CMD ["serve"]
