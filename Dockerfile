# crown: multi-stage build. The final image holds only the static-ish binary on distroless
# (glibc, CA certificates), runs as a non-root user, and has `crown` as its entrypoint.
#   docker build -t crown:local .
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && strip target/release/crown

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/crown /usr/local/bin/crown
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/crown"]
CMD ["run", "--backend=kube", "--http=0.0.0.0:8080"]
