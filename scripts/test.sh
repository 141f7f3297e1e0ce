#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
# The systemd unit's hardening is rated by systemd itself (tests/systemd_unit.rs).
command -v systemd-analyze >/dev/null || need+=(systemd)
# Report PDFs are read back as text (tests/access_ops.rs).
command -v pdftotext >/dev/null || need+=(poppler-utils)
# RTSP tests: GStreamer's RTSP server driven by tests/support/rtsp_server.py under Debian's
# /usr/bin/python3 (needs its gi), ffprobe/ffmpeg as the reference client.
command -v ffprobe >/dev/null || need+=(ffmpeg)
command -v gst-inspect-1.0 >/dev/null || need+=(gstreamer1.0-tools)
# Browser test (tests/media_live.rs): headless Chromium plays the HLS page over CDP.
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c 'import gi' 2>/dev/null || need+=(python3-gi)
# The .deb (tests/deb_package.rs) is checked by lintian; the Raspberry Pi build
# (tests/cross_arm64.rs) is cross-compiled with Debian's aarch64 toolchain and run under qemu-user.
command -v lintian >/dev/null || need+=(lintian)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
for p in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# Home Assistant tests (home_assistant.rs, ha_blueprints.rs): a venv of Python 3.11 (below).
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
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
# A real Home Assistant 2024.1.6 (the newest that runs on Python 3.11) with the pins its MQTT
# integration needs (HA runs with --skip-pip and installs nothing itself); ha_run.py lists them
# from the installed HA's manifests; colorlog is what HA's check_config script (run by
# tests/ha_blueprints.rs) would otherwise pip-install itself on every fresh venv. A marker
# written last makes a second run free.
ha_venv="${GATEHOUSE_HA_VENV:-$HOME/.cache/gatehouse/ha-2024.1.6}"
ha_marker="$ha_venv/.gatehouse-complete"
ha_script_reqs="colorlog==6.7.0"
ha_want="homeassistant==2024.1.6 $ha_script_reqs $(grep '^DOMAINS = ' tests/support/ha_run.py)"
if [ ! -f "$ha_marker" ] || [ "$(cat "$ha_marker")" != "$ha_want" ]; then
  echo "Creating the Home Assistant venv in $ha_venv (a few minutes, once)" >&2
  # pip install is idempotent: an interrupted run resumes in the same venv.
  [ -f "$ha_venv/pyvenv.cfg" ] || { mkdir -p "$ha_venv" && /usr/bin/python3 -m venv "$ha_venv"; }
  "$ha_venv/bin/pip" install -q --disable-pip-version-check homeassistant==2024.1.6
  ha_constraints="$("$ha_venv/bin/python" -c 'import homeassistant, os; print(os.path.join(os.path.dirname(homeassistant.__file__), "package_constraints.txt"))')"
  ha_reqs_text="$("$ha_venv/bin/python" tests/support/ha_run.py --requirements)"
  mapfile -t ha_reqs <<<"$ha_reqs_text"
  "$ha_venv/bin/pip" install -q --disable-pip-version-check -c "$ha_constraints" "${ha_reqs[@]}" \
    "$ha_script_reqs"
  echo "$ha_want" >"$ha_marker"
fi
export GATEHOUSE_HA_PYTHON="$ha_venv/bin/python"
# Schemathesis (tests/schemathesis.rs) checks the REST API against its own OpenAPI document.
st_venv="${GATEHOUSE_ST_VENV:-$HOME/.cache/gatehouse/schemathesis}"
st_want="schemathesis==4.32.5"
if [ ! -f "$st_venv/.gatehouse-complete" ] || [ "$(cat "$st_venv/.gatehouse-complete")" != "$st_want" ]; then
  echo "Creating the Schemathesis venv in $st_venv (once)" >&2
  [ -f "$st_venv/pyvenv.cfg" ] || { mkdir -p "$st_venv" && /usr/bin/python3 -m venv "$st_venv"; }
  "$st_venv/bin/pip" install -q --disable-pip-version-check "$st_want"
  echo "$st_want" >"$st_venv/.gatehouse-complete"
fi
export GATEHOUSE_SCHEMATHESIS="$st_venv/bin/st"
# cargo-deb 3.x packages the .deb in tests/deb_package.rs (a few minutes to install, once).
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
  cargo install cargo-deb --locked --version '^3'
fi
# The arm64 binary tests/cross_arm64.rs runs under qemu: a debug build with the simulators
# (the demo needs them), about 3 minutes from clean on 2 cores, incremental after that.
rustup target add aarch64-unknown-linux-gnu >/dev/null
cargo build --locked --target aarch64-unknown-linux-gnu --bin gatehouse
export GATEHOUSE_ARM64_BIN="$PWD/target/aarch64-unknown-linux-gnu/debug/gatehouse"
cargo test --locked "$@"
