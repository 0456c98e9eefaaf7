# Sourced by the end-to-end scripts: builds the binaries, makes a temporary directory that is
# removed on exit with every background process in `pids`, and defines `fail`.
# Set E2E_NAME before sourcing.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release -q -p ota-server -p ota-device
S=${CARGO_TARGET_DIR:-target}/release/ota-server
D=${CARGO_TARGET_DIR:-target}/release/ota-device
T=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "$E2E_NAME: FAIL: $*" >&2; exit 1; }
