#!/usr/bin/env python3
"""Whose code fills a firmware's flash: every 2 bytes of .text are attributed, through the DWARF
line table (`addr2line -i`), to the crate whose source they came from. Code the compiler inlined
from the Rust library into a crate's function (an `Option::map`, a slice index) counts for that
crate, since it is that crate's logic; code with no crate frame above it counts as `core`.
.rodata is attributed by symbol name where it has one.

usage: share.py ELF [--minus-rodata BYTES] [--label NAME]
"""
import collections
import re
import subprocess
import sys

OTA = ("ota-core", "ota-storage", "ota-transport-coap", "ota-transport-mqtt", "ota-oscore",
       "ota-delta")
GROUPS = [
    ("crypto", ("sha2", "curve25519-dalek", "ed25519-dalek", "ed25519", "signature", "digest",
                "block-buffer", "subtle", "aes", "ccm", "ctr", "cipher", "hkdf", "hmac", "aead",
                "crypto-common", "generic-array", "zeroize", "cpufeatures")),
    ("CoAP / MQTT codec", ("coap-message", "coap-message-implementations", "coap-numbers",
                           "minimq", "embedded-io", "embedded-io-async", "num_enum", "varint-rs",
                           "smlang")),
    ("encoding, containers", ("postcard", "serde", "serde_core", "cobs", "crc", "crc-catalog",
                              "heapless", "hash32", "byteorder", "bitflags")),
    ("executor, runtime", ("embassy-executor", "embassy-time", "embassy-time-driver",
                           "embassy-time-queue-utils", "embassy-sync", "embassy-futures",
                           "cortex-m", "cortex-m-rt", "critical-section")),
    ("semihosting", ("cortex-m-semihosting",)),
]


def crate_of(path):
    """The crate a source path belongs to, or None for the Rust library."""
    m = re.search(r"/(ota-[a-z-]+)/src/", path)
    if m and m.group(1) in OTA:
        return m.group(1)
    m = re.search(r"/registry/src/[^/]+/([A-Za-z0-9_-]+?)-\d+\.\d+\.\d+[^/]*/", path)
    if m:
        return m.group(1)
    if "/rustc/" in path or "/library/" in path:
        return None
    if "firmware-cortex-m" in path:
        return "firmware"
    return "?"


def group_of(crate):
    if crate in OTA:
        return "OTA crates (" + crate + ")"
    if crate == "firmware":
        return "firmware, test server"
    for name, crates in GROUPS:
        if crate in crates:
            return name
    return "other crates"


def sections(elf):
    out = subprocess.run(["arm-none-eabi-readelf", "-SW", elf], capture_output=True, text=True,
                         check=True).stdout
    found = {}
    for line in out.splitlines():
        m = re.search(r"\]\s+(\.\w+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)", line)
        if m:
            found[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16))
    return found


def text_share(elf, start, size):
    addrs = "\n".join(hex(a) for a in range(start, start + size, 2))
    out = subprocess.run(["arm-none-eabi-addr2line", "-a", "-i", "-e", elf], input=addrs,
                         capture_output=True, text=True, check=True).stdout
    share = collections.Counter()
    frames = []

    def flush():
        crate = None
        for f in frames:  # innermost first: the first crate frame owns the bytes
            crate = crate_of(f)
            if crate is not None:
                break
        if frames:
            share["core (fmt, memcpy, panics)" if crate is None else group_of(crate)] += 2

    for line in out.splitlines():
        if line.startswith("0x"):
            flush()
            frames = []
        else:
            frames.append(line.rsplit(":", 1)[0])
    flush()
    return share


def rodata_share(elf, start, size):
    out = subprocess.run(["arm-none-eabi-nm", "-S", "-C", "--size-sort", elf],
                         capture_output=True, text=True, check=True).stdout
    share = collections.Counter()
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        addr, sz, name = int(parts[0], 16), int(parts[1], 16), parts[3]
        if not start <= addr < start + size:
            continue
        m = re.match(r"<?([a-z0-9_]+)::", name)
        crate = m.group(1).replace("_", "-") if m else None
        if crate == "firmware-cortex-m" or name.startswith("IMAGE") or "fixture" in name:
            crate = "firmware"
        share[group_of(crate) if crate else "unnamed constants"] += sz
    named = sum(share.values())
    share["unnamed constants"] += max(0, size - named)
    return share


def main():
    elf = sys.argv[1]
    minus = int(sys.argv[sys.argv.index("--minus-rodata") + 1]) if "--minus-rodata" in sys.argv else 0
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else elf
    s = sections(elf)
    text = text_share(elf, *s[".text"])
    rodata = rodata_share(elf, *s[".rodata"]) if ".rodata" in s else collections.Counter()
    rodata["firmware, test server"] -= minus
    rows = sorted(set(text) | set(rodata), key=lambda k: -(text[k] + rodata[k]))
    print(f"\n{label}: flash by origin (.text via DWARF line tables, .rodata by symbol)")
    print(f"  {'':38} {'.text B':>8} {'.rodata B':>9}")
    ota = 0
    for k in rows:
        print(f"  {k:38} {text[k]:8} {rodata[k]:9}")
        if k.startswith("OTA crates"):
            ota += text[k] + rodata[k]
    print(f"  {'OTA crates own code, all':38} {ota:8}   (target <= 16384)")


if __name__ == "__main__":
    main()
