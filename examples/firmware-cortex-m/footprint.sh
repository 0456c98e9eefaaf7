#!/usr/bin/env bash
# Builds the firmware over CoAP with and without Ed25519, with OSCORE, over MQTT, and the embassy
# firmware (opt-level "z", LTO), prints their flash and RAM footprint, and runs each build under
# QEMU, where it applies an update and prints the stack it needed. Then attributes the flash of
# two builds to the crates it came from (share.py), so the OTA crates' own share stands apart from
# crypto, codecs, semihosting and the test server, and traces the stack of two builds to the
# deepest call chain in their machine code (stack_chain.py). Needs Debian's binutils-arm-none-eabi,
# qemu-system-arm and python3.
set -euo pipefail
cd "$(dirname "$0")"
elf=target/thumbv7em-none-eabihf/release/firmware-cortex-m
embassy_elf=target/thumbv7em-none-eabihf/release/firmware-embassy
flash_bytes=$((9 * 4096))   # the RAM that stands in for flash on the emulated board (FLASH_BYTES)
image_bytes=8192            # the test image the in-memory server holds (fixture, in .rodata)

row() {
  # .text + .rodata + .data (its initial values live in flash) = flash; .data + .bss = RAM.
  arm-none-eabi-size -A "${2:-$elf}" | awk -v name="$1" -v fb="$flash_bytes" -v img="$image_bytes" '
    $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { flash += $2 }
    $1 == ".data" { flash += $2; ram += $2 }
    $1 == ".bss" || $1 == ".uninit" { ram += $2 }
    END { printf "%-28s %9d %9d\n", name, flash - img, ram - fb }'
}

stack() {
  # Runs the build under QEMU (it applies an update) and prints the measured stack.
  timeout 60 cargo run --release -q "$@" | tee "$out" >&2
  grep -o 'stack high-water: [0-9]* bytes' "$out" | grep -o '[0-9]*'
}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
cargo build --release -q --no-default-features --features delta
s1=$(stack --no-default-features --features delta --bin firmware-cortex-m)
r1=$(row "CoAP, without Ed25519")
share1=$(python3 share.py "$elf" --minus-rodata "$image_bytes" --label "CoAP, without Ed25519")
cargo build --release -q --no-default-features
s0=$(stack --no-default-features --bin firmware-cortex-m)
r0=$(row "  the same, without patches")
share0=$(python3 share.py "$elf" --minus-rodata "$image_bytes" --label "CoAP, without Ed25519 or patches")
cargo build --release -q
s2=$(stack --bin firmware-cortex-m)
r2=$(row "CoAP, with Ed25519")
s5=$(stack --bin firmware-embassy)
r5=$(row "embassy, CoAP, Ed25519" "$embassy_elf")
share5=$(python3 share.py "$embassy_elf" --minus-rodata "$image_bytes" --label "embassy, CoAP, with Ed25519")
# The stack measured above, traced to the frames that make it (the deepest call chain).
chain2=$(python3 stack_chain.py "$elf" __cortex_m_rt_main --label "CoAP, with Ed25519")
chain5=$(python3 stack_chain.py "$embassy_elf" "TaskStorage<F>::poll" --label "embassy, CoAP, Ed25519")
cargo build --release -q --features oscore
s4=$(stack --features oscore --bin firmware-cortex-m)
r4=$(row "CoAP + OSCORE, with Ed25519")
cargo build --release -q --features mqtt
s3=$(stack --features mqtt --bin firmware-cortex-m)
r3=$(row "MQTT, with Ed25519")
echo
printf "%-28s %9s %9s %9s\n" "firmware (thumbv7em, z, LTO)" "flash B" "RAM B" "stack B"
printf "%s %9s\n" "$r1" "$s1"
printf "%s %9s\n" "$r0" "$s0"
printf "%s %9s\n" "$r2" "$s2"
printf "%s %9s\n" "$r4" "$s4"
printf "%s %9s\n" "$r3" "$s3"
printf "%s %9s\n" "$r5" "$s5"
echo "(flash: the whole firmware less the ${image_bytes}-byte test image, including semihosting output and the"
echo " in-memory test server or broker; RAM: .data + .bss less the ${flash_bytes} bytes that stand in for flash,"
echo " so mostly the in-memory peer, which lives in a static; stack: the high-water mark of the whole run under"
echo " QEMU, where the device keeps all its OTA state: state machine, storage, transport buffers, MQTT session)"
echo " The embassy firmware keeps its tasks in statics, so its OTA state is in RAM, not stack; it prints"
echo " that state above (OTA RAM), measured with size_of_val."
echo " Without patches: ota-storage's \`delta\` feature off (no applier; a patch is refused at Begin and the"
echo " server sends the whole image)."
echo "$share1"
echo "$share0"
echo "$share5"
echo
echo "$chain2"
echo "$chain5"
echo "(a chain's total is within a few bytes of the stack measured under QEMU when it is the one that sets"
echo " the high-water mark; a frame counts the code inlined into its function, so SignedManifest::verify"
echo " holds ed25519-dalek's verification)"
