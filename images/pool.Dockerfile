# Pool container: slot-agent as PID 1, plus the test tenant for tests and demos.
# Built offline from static binaries by scripts/build-images.sh.
FROM scratch
LABEL managed-by=slotpack org.opencontainers.image.title="slotpack pool"
COPY slot-agent /usr/local/bin/slot-agent
COPY test-tenant /usr/local/bin/test-tenant
VOLUME /pool
EXPOSE 8999
ENTRYPOINT ["/usr/local/bin/slot-agent"]
