#!/usr/bin/env bash
# Fuzz the parsers of device and user input (issue 19): scripts/fuzz.sh [SECONDS=30] [TARGET…]
#
# Builds fuzz/ with cargo-fuzz on the nightly toolchain (installing cargo-fuzz if missing),
# then runs each target (all of them when none is named) for SECONDS, one after the other,
# with a 512 MB RSS limit and a 5 s per-input timeout. Fails if any target crashes, hangs or
# runs out of memory; the input that did it is in fuzz/artifacts/<target>/.
#
# Each run starts from the seeds in fuzz/corpus/<target>/ (kept in git) and from what earlier
# runs found in fuzz/target/corpus/<target>/ (not in git); new inputs go to the latter.
# FUZZ_RUNS=N runs each target for N executions instead (the issue's 10,000,000 per target),
# still stopping after SECONDS; FUZZ_ARGS adds libFuzzer flags. FUZZ_FRESH=1 (CI) empties
# fuzz/target/corpus/<target>/ first, so a run starts from the seeds in git alone: what it
# finds depends on the commit, not on a corpus left by an earlier run or a restored cache.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
secs=${1:-30}
[[ $# -gt 0 ]] && shift
if ! [[ $secs =~ ^[0-9]+$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS=30] [TARGET…]" >&2
    exit 2
fi

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    # Not `mapfile < <(…)`: a failing `cargo fuzz list` would go unnoticed and the run would
    # pass with no target at all.
    list=$(cargo +nightly fuzz list)
    mapfile -t targets <<<"$list"
fi
for t in "${targets[@]}"; do
    if [[ -z $t || ! -d corpus/$t ]]; then
        echo "fuzz.sh: no target '$t' (no fuzz/corpus/$t/ seeds)" >&2
        exit 2
    fi
done

dict_of() {
    case $1 in
        multipart) echo dict/multipart.dict ;;
        alert) echo dict/xml.dict ;;
        signalr | net2_events) echo dict/json.dict ;;
        mqtt_command) echo dict/mqtt.dict ;;
        config) echo dict/yaml.dict ;;
        vcard) echo dict/vcard.dict ;;
        *) ;;
    esac
}

# Build artifacts live outside the checkout, so that a clean clone (CI) rebuilds gatehouse
# under ASan but not all of its dependencies (12–22 min cold here). Cargo rebuilds what
# changed; the corpora stay in fuzz/target/corpus/. FUZZ_TARGET_DIR overrides.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/fuzz-target}"

start=$(date +%s)
cargo +nightly fuzz build
echo "fuzz.sh: build took $(($(date +%s) - start)) s"

# AddressSanitizer keeps freed memory in a quarantine (256 MB by default) to catch use after
# free, and libFuzzer counts it against -rss_limit_mb: the config target's alias bomb
# (corpus/config/alias-bomb.yaml: 28 MB live, refused by serde_norway's repetition limit)
# went over 512 MB on quarantine alone. A smaller quarantine keeps the limit about gatehouse.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=64}"

failed=()
for t in "${targets[@]}"; do
    [[ ${FUZZ_FRESH:-} == 1 ]] && rm -rf "target/corpus/$t"
    mkdir -p "target/corpus/$t"
    args=(-rss_limit_mb=512 -timeout=5 -max_total_time="$secs" -print_final_stats=1)
    [[ -n ${FUZZ_RUNS:-} ]] && args+=(-runs="$FUZZ_RUNS")
    d=$(dict_of "$t")
    [[ -n $d ]] && args+=(-dict="$d")
    # shellcheck disable=SC2206
    args+=(${FUZZ_ARGS:-})
    echo "fuzz.sh: $t for ${secs} s"
    if ! cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- "${args[@]}"; then
        failed+=("$t")
    fi
done

echo "fuzz.sh: $(( $(date +%s) - start )) s in all"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, no crash, hang or OOM"
