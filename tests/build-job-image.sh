#!/usr/bin/env bash
# Builds the local job image `drover-job:latest` (override with DROVER_JOB_IMAGE)
# without a registry: a tarball holding Debian's static busybox, its applets as
# symlinks and an empty /tmp, imported with `docker import`. Idempotent: does
# nothing when an image of the same name and recipe version already exists.
# Usage: bash tests/build-job-image.sh [--force]
set -euo pipefail

IMAGE="${DROVER_JOB_IMAGE:-drover-job:latest}"
RECIPE=1 # bump when the image contents change, so existing images get rebuilt

if [[ "${1:-}" != "--force" ]] &&
  [[ "$(docker image inspect -f '{{ index .Config.Labels "drover.job-image" }}' "$IMAGE" 2>/dev/null || true)" == "$RECIPE" ]]; then
  exit 0
fi

BUSYBOX=/bin/busybox
if [[ ! -x "$BUSYBOX" ]] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q busybox-static >/dev/null || {
    apt-get update -q >/dev/null
    apt-get install -y -q busybox-static >/dev/null
  }
fi
# Must be static: the image has no libc.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build-job-image: $BUSYBOX is dynamically linked; install busybox-static" >&2
  exit 1
fi

ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/etc"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] || ln -sf busybox "$ROOT/bin/$applet"
done
echo 'root:x:0:0:root:/tmp:/bin/sh' >"$ROOT/etc/passwd"
echo 'root:x:0:' >"$ROOT/etc/group"

tar -C "$ROOT" --numeric-owner --owner=0 --group=0 -c . |
  docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/bin' \
    --change "LABEL drover.job-image=$RECIPE" \
    - "$IMAGE" >/dev/null
echo "build-job-image: built $IMAGE"
