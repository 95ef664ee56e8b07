# consent-webhooks container image.
#
#   docker build -t consent-webhooks .            (or: podman build -t consent-webhooks .)
#   docker run --read-only -v ./config.toml:/etc/consent-webhooks/config.toml:ro consent-webhooks
#
# Two stages: `build` compiles the release binary on Debian bookworm with the C libraries that
# librdkafka is built against (OpenSSL, Cyrus SASL + MIT Kerberos for GSSAPI, libcurl for OIDC;
# zstd is linked statically), then gathers exactly the shared libraries the binary loads
# (`ldd`). The runtime image is `scratch` plus those libraries, CA certificates, a passwd entry
# for the non-root user and one static busybox binary for the HEALTHCHECK: no shell, no package
# manager, nothing written at run time, so it runs with a read-only root filesystem.
#
# The base images are build arguments, so a mirror or a locally made base can stand in
# (README, Operating it: the container image).
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Unpinned on purpose: the build stage takes bookworm's current security updates; nothing of it
# but the listed libraries reaches the runtime image.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      busybox-static ca-certificates cmake g++ libcurl4-openssl-dev libkrb5-dev libsasl2-dev \
      libsasl2-modules-gssapi-mit libssl-dev libzstd-dev make perl pkg-config python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# CARGO_NET_OFFLINE=true builds from a vendored or pre-filled registry (a build without network).
ARG CARGO_NET_OFFLINE=false
RUN CARGO_NET_OFFLINE="${CARGO_NET_OFFLINE}" cargo build --release --locked --bin consent-webhooks \
 && install -D -m 0755 target/release/consent-webhooks /rootfs/usr/local/bin/consent-webhooks
# The runtime file system: the binary (debug info stripped, symbols kept for backtraces), its
# shared libraries and those of the SASL GSSAPI plugin, which libsasl2 loads at run time (each
# at its real path under /usr, with its soname link; /lib and /lib64 are links to /usr as on
# bookworm, where the dynamic loader is looked up), CA certificates, the non-root user, busybox
# for the HEALTHCHECK only.
RUN set -eu; \
    objcopy --strip-debug /rootfs/usr/local/bin/consent-webhooks; \
    ln -s usr/lib /rootfs/lib; ln -s usr/lib64 /rootfs/lib64; \
    plugins="$(find /usr/lib -path '*/sasl2/libgssapiv2.so*' -type f)"; \
    for object in /rootfs/usr/local/bin/consent-webhooks $plugins; do \
      ldd "$object" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'; \
    done | sort -u | while read -r lib; do \
      real="$(readlink -f "$lib")"; \
      install -D -m 0755 "$real" "/rootfs$real"; \
      dir="$(readlink -f "$(dirname "$lib")")"; link="$dir/$(basename "$lib")"; \
      if [ "$link" != "$real" ]; then mkdir -p "/rootfs$dir"; ln -sf "$real" "/rootfs$link"; fi; \
    done; \
    for plugin in $plugins; do install -D -m 0644 "$plugin" "/rootfs$plugin"; done; \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt; \
    install -D -m 0755 /bin/busybox /rootfs/usr/local/bin/busybox; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group; \
    printf 'hosts: files dns\n' > /rootfs/etc/nsswitch.conf; \
    install -d -m 0755 /rootfs/etc/consent-webhooks; \
    install -d -m 1777 /rootfs/tmp; \
    chroot /rootfs /usr/local/bin/consent-webhooks --version

FROM scratch AS runtime
COPY --from=build /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    CONSENT_WEBHOOKS_CONFIG=/etc/consent-webhooks/config.toml \
    CONSENT_WEBHOOKS_LOG_FORMAT=json
USER 65532:65532
EXPOSE 9464
# /healthz on the default `server.listen` port; busybox's wget fails on anything but a 2xx. No
# `wget -T`: Debian's static busybox 1.35 crashes with it; --timeout bounds the check instead.
# A configuration listening elsewhere overrides this (docker run --health-cmd ...).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9464/healthz"]
ENTRYPOINT ["/usr/local/bin/consent-webhooks"]
CMD ["run"]
