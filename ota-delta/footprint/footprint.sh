#!/usr/bin/env bash
# The applier's flash and static RAM on Cortex-M4 (thumbv7em-none-eabihf, opt-level "z", LTO):
# this program built with the applier minus the same program without it.
set -euo pipefail
cd "$(dirname "$0")"
elf=${CARGO_TARGET_DIR:-target}/thumbv7em-none-eabihf/release/ota-delta-footprint
size() {
  arm-none-eabi-size -A "$elf" | awk '
    $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
    $1 == ".data" { flash += $2; ram += $2 }
    $1 == ".bss" || $1 == ".uninit" { ram += $2 }
    END { print flash, ram }'
}
cargo build --release -q
read -r base_flash base_ram < <(size)
cargo build --release -q --features applier
read -r flash ram < <(size)
echo "applier on thumbv7em-none-eabihf (opt-level z, LTO): flash $((flash - base_flash)) B (program $flash B, baseline $base_flash B), static RAM $((ram - base_ram)) B"
echo "(its RAM is on the stack or wherever the caller keeps it: size_of::<Applier>(), printed by cargo test -p ota-delta ram_and_state_figures)"
