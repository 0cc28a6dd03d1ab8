# syntax=docker/dockerfile:1.7
# tickstream: a static musl binary on Alpine, non-root. Multi-arch through buildx:
#   docker buildx build --platform linux/amd64,linux/arm64 -t tickstream .
# Each platform builds natively (QEMU under buildx for the foreign one); Alpine's Rust targets
# musl and links statically by default, so the binary needs nothing from the runtime image.
# Decisions: docs/adr/0001-alpine-base-images.md, docs/adr/0002-container-image-strategy.md.

ARG RUST_VERSION=1.95.0
ARG ALPINE_VERSION=3.23
ARG NODE_VERSION=26.13.0

# The dashboard (web/): plain files, the same for every platform, so built once on the build
# machine's own architecture. npm ci installs exactly web/package-lock.json.
FROM --platform=$BUILDPLATFORM node:${NODE_VERSION}-alpine${ALPINE_VERSION} AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN --mount=type=cache,id=npm,target=/root/.npm npm ci --no-audit --no-fund
COPY web/index.html web/tsconfig.json web/vite.config.ts ./
COPY web/src ./src
RUN npm run build

FROM rust:${RUST_VERSION}-alpine${ALPINE_VERSION} AS builder
ARG TARGETARCH
# The toolchain file asks for rustfmt and clippy; the image's toolchain is the pinned one.
ENV RUSTUP_TOOLCHAIN=${RUST_VERSION} \
    CARGO_TERM_COLOR=never
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
# Every workspace member must be present for cargo to load the workspace (scripts/check
# verifies this list against Cargo.toml); only tickstream is compiled.
COPY service ./service
COPY loadgen ./loadgen
COPY deployer ./deployer
COPY infra ./infra
COPY tests ./tests
# build.rs embeds the dashboard from here instead of running npm.
COPY --from=web /web/dist /web-dist
ENV TICKSTREAM_WEB_DIST=/web-dist
# The registry and target directory live in BuildKit cache mounts (one per architecture), so a
# source change recompiles tickstream and not its 200 dependencies.
RUN --mount=type=cache,id=cargo-registry-${TARGETARCH},target=/usr/local/cargo/registry \
    --mount=type=cache,id=cargo-target-${TARGETARCH},target=/src/target \
    cargo build --release --locked -p tickstream --bin tickstream \
    && install -D -m 0555 target/release/tickstream /out/tickstream

FROM alpine:${ALPINE_VERSION}
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/tickstream/tickstream
LABEL org.opencontainers.image.title="tickstream" \
      org.opencontainers.image.description="Real-time market data over WebSocket and REST" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# ca-certificates for an outbound TLS feed later; the account is for `docker exec` listings,
# the image runs by number.
# hadolint ignore=DL3018
RUN apk add --no-cache ca-certificates \
    && addgroup -S -g 10001 tickstream \
    && adduser -S -D -H -u 10001 -G tickstream -s /sbin/nologin tickstream
COPY --from=builder /out/tickstream /usr/local/bin/tickstream
USER 10001:10001
ENV TICKSTREAM_LISTEN=0.0.0.0:8080 \
    TICKSTREAM_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["tickstream", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tickstream"]
