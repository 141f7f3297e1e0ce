#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
# RTSP tests: GStreamer's RTSP server driven by tests/support/rtsp_server.py under Debian's
# /usr/bin/python3 (needs its gi), ffprobe/ffmpeg as the reference client.
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v gst-inspect-1.0 >/dev/null || need+=(gstreamer1.0-tools)
# Browser test (tests/media_live.rs): headless Chromium plays the HLS page over CDP.
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c 'import gi' 2>/dev/null || need+=(python3-gi)
if ! /usr/bin/python3 tests/support/rtsp_server.py --check >/dev/null 2>&1; then
  need+=(gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly
    gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-base)
fi
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (https://rustup.rs), 1.89 or newer" >&2
  exit 1
fi
cargo test --locked "$@"
