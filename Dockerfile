# directmail: build with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin directmail

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin directmail \
 && mkdir -p /data /usr/share/directmail \
 && chown directmail /data
COPY --from=build /src/target/release/directmail /usr/local/bin/directmail
COPY --from=build /src/static /usr/share/directmail/static
ENV DIRECTMAIL_HTTP_ADDR=0.0.0.0:8080 \
    DIRECTMAIL_DATA_DIR=/data \
    DIRECTMAIL_STATIC_DIR=/usr/share/directmail/static
VOLUME ["/data"]
EXPOSE 8080
USER directmail
WORKDIR /data
ENTRYPOINT ["/usr/local/bin/directmail"]
CMD ["serve"]
