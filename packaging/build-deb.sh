#!/usr/bin/env bash
# Builds the packaged gatehouse (the dist profile, without the simulators and the embedded
# broker) and its .deb for a Debian architecture, then checks the .deb with lintian.
#   packaging/build-deb.sh [amd64|arm64|armhf|all]     (default: this machine's architecture)
# arm64: Raspberry Pi 3/4/5 with 64-bit Raspberry Pi OS; armhf: 32-bit Raspberry Pi OS (Pi 2
# and later; ARMv7, so not the Pi 1 / Zero v1). Both need Bookworm or later: the binaries need
# glibc 2.34 or newer (Bullseye has 2.31). Cross builds use Debian's cross compilers (linkers and
# per-target CC/CXX in .cargo/config.toml). Output: target/debian/gatehouse_<version>_<arch>.deb
set -euo pipefail
cd "$(dirname "$0")/.."

host_arch="$(dpkg --print-architecture)"
arches=("${1:-$host_arch}")
[ "${arches[0]}" = all ] && arches=(amd64 arm64 armhf)

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown architecture $1 (amd64, arm64, armhf or all)" >&2; return 1 ;;
  esac
}
# Debian's cross toolchain per architecture (nothing extra for the host's own).
cross_pkgs_of() {
  case "$1" in
    "$host_arch") ;;
    arm64) echo gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armhf) echo gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
    *) echo "no cross toolchain known for $1 on $host_arch" >&2; return 1 ;;
  esac
}

# What the build needs, installed once.
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v cc >/dev/null || need+=(build-essential)
for a in "${arches[@]}"; do
  triple_of "$a" >/dev/null
  for p in $(cross_pkgs_of "$a"); do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
for a in "${arches[@]}"; do
  rustup target add "$(triple_of "$a")" >/dev/null
done
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
  # 3.x: systemd units are installed only because maintainer-scripts is set (Cargo.toml).
  cargo install cargo-deb --locked --version '^3'
fi

mkdir -p target/debian
for a in "${arches[@]}"; do
  triple="$(triple_of "$a")"
  echo "== gatehouse for $a ($triple)" >&2
  # --no-default-features: no simulators (`gatehouse demo`, `gatehouse sim`) and no embedded
  # MQTT broker; a Pi in service uses neither. --profile dist: see Cargo.toml.
  cargo deb --locked --profile dist --no-default-features --target "$triple" -o target/debian/
  deb="$(ls -t target/debian/gatehouse_*_"$a".deb | head -n 1)"
  bin="target/$triple/dist/gatehouse"
  # The newest glibc symbol version the binary needs: Raspberry Pi OS Bookworm has 2.36.
  glibc="$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
  echo "$deb: binary $(stat -c %s "$bin") bytes, needs $glibc" >&2
  # The overrides shipped in the package (packaging/lintian-overrides) say why each remaining
  # tag does not apply; any other error or warning fails the build. The one exception: the
  # liblivemedia override goes unused on builds whose LTO merged away retina's LIVE555 string
  # (see the overrides file), which lintian reports as mismatched-override.
  report="$(lintian "$deb" 2>&1)" || true
  printf '%s\n' "$report"
  if printf '%s\n' "$report" | grep -E '^[EW]: ' \
    | grep -v 'mismatched-override embedded-library liblivemedia ' | grep -q .; then
    echo "lintian: errors or warnings in $deb" >&2
    exit 1
  fi
done
