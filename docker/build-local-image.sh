#!/usr/bin/env bash
# Builds the Drover node image without a registry: the same runtime image as
# the top-level Dockerfile (non-root, `drover agent --config
# /etc/drover/drover.toml`, ports 7700-7702, a volume at /var/lib/drover), but
# made `FROM scratch` out of a binary built on this host and exactly the shared
# libraries it links (found with ldd), so no base image is pulled.
#
# The image is named by the content it holds, `drover:local-<hash>` (the
# binary, its libraries and this recipe), and then tagged `drover:local` (or
# --tag). Nothing is rebuilt when that content image exists, so a second run
# takes a second. The content name is printed on stdout; everything else goes
# to stderr. Images of earlier builds are removed once they are an hour old
# and no container uses them.
#
# Usage: bash docker/build-local-image.sh [--binary PATH] [--tag NAME | --no-tag] [--force]
#   --binary PATH  put this drover binary in the image (e.g. a debug build);
#                  default: `cargo build --release --locked`, then its output
#   --tag NAME     also tag the image NAME (default: $DROVER_IMAGE or drover:local)
#   --no-tag       only the content name (tests use it, leaving drover:local alone)
#   --force        rebuild even if the content image exists
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$REPO_ROOT/docker/build-local-image.sh"
BINARY=""
TAG="${DROVER_IMAGE:-drover:local}"
FORCE=0
RETAG=1
# The runtime user, as in the Dockerfile's distroless `nonroot` base.
UID_GID=65532

usage() {
  sed -n '/^# Usage:/,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while [[ $# -gt 0 ]]; do
  case "$1" in
  --binary)
    [[ $# -ge 2 ]] || usage
    BINARY="$2"
    shift 2
    ;;
  --tag)
    [[ $# -ge 2 ]] || usage
    TAG="$2"
    shift 2
    ;;
  --no-tag)
    RETAG=0
    shift
    ;;
  --force)
    FORCE=1
    shift
    ;;
  *) usage ;;
  esac
done

if [[ -z "$BINARY" ]]; then
  (cd "$REPO_ROOT" && cargo build --release --locked --bin drover) >&2
  BINARY="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/drover"
fi
if [[ ! -x "$BINARY" ]]; then
  echo "build-local-image: $BINARY is not an executable file" >&2
  exit 1
fi

# The shared libraries the binary loads, as ldd resolves them on this host
# (libc, libm, libgcc_s and the dynamic loader for the Rust binary).
mapfile -t LIBS < <(ldd "$BINARY" | awk '
  $2 == "=>" && $3 ~ /^\// { print $3 }
  $1 ~ /^\// { print $1 }' | sort -u)
if [[ ${#LIBS[@]} -eq 0 ]]; then
  echo "build-local-image: ldd lists no libraries for $BINARY; is it a dynamic Linux binary?" >&2
  exit 1
fi

# Content hash: the binary, each library (path and bytes) and this recipe.
HASH="$(
  {
    sha256sum <"$BINARY"
    sha256sum <"$SELF"
    for lib in "${LIBS[@]}"; do
      echo "$lib"
      sha256sum <"$lib"
    done
  } | sha256sum | cut -c1-16
)"
REPOSITORY="${TAG%:*}"
[[ "$REPOSITORY" != "$TAG" ]] || TAG="$TAG:latest"
CONTENT="$REPOSITORY:local-$HASH"

if [[ "$FORCE" == 1 ]] ||
  [[ "$(docker image inspect -f '{{ index .Config.Labels "drover.local-image" }}' "$CONTENT" 2>/dev/null || true)" != "$HASH" ]]; then
  CTX="$(mktemp -d)"
  trap 'rm -rf "$CTX"' EXIT
  ROOT="$CTX/rootfs"
  mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/drover" "$ROOT/tmp" "$CTX/data"
  chmod 1777 "$ROOT/tmp"
  # Debug info makes a debug build ~10x larger; symbols stay for backtraces.
  strip --strip-debug -o "$ROOT/usr/local/bin/drover" "$BINARY"
  chmod 0755 "$ROOT/usr/local/bin/drover"
  for lib in "${LIBS[@]}"; do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
  # Names for the two users a process here may run as. glibc's built-in
  # NSS (files, dns) needs nothing else to resolve the cluster's host names.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%s:%s:nonroot:/home/nonroot:/sbin/nologin\n' \
    "$UID_GID" "$UID_GID" >"$ROOT/etc/passwd"
  printf 'root:x:0:\nnonroot:x:%s:\n' "$UID_GID" >"$ROOT/etc/group"
  cat >"$CTX/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=$UID_GID:$UID_GID data/ /var/lib/drover/
ENV PATH=/usr/local/bin:/usr/bin:/bin NO_COLOR=1
USER $UID_GID:$UID_GID
WORKDIR /var/lib/drover
EXPOSE 7700 7701 7702
VOLUME /var/lib/drover
LABEL drover.local-image=$HASH
ENTRYPOINT ["/usr/local/bin/drover"]
CMD ["agent", "--config", "/etc/drover/drover.toml"]
EOF
  docker build -q -t "$CONTENT" "$CTX" >/dev/null
  echo "build-local-image: built $CONTENT from $BINARY" >&2
fi
[[ "$RETAG" == 0 ]] || docker tag "$CONTENT" "$TAG"

# Earlier builds: gone once an hour old and unused by any container (a test
# that just built one keeps it while its containers exist).
docker image prune -af \
  --filter "label=drover.local-image" \
  --filter "label!=drover.local-image=$HASH" \
  --filter "until=1h" >/dev/null 2>&1 || true

echo "$CONTENT"
