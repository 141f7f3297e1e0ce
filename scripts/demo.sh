#!/usr/bin/env bash
# `gatehouse demo` on a fresh Debian machine: the whole daemon against built-in simulators.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cc >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust 1.89 or newer (https://rustup.rs)" >&2
  exit 1
fi
exec cargo run --release --locked -- demo "$@"
