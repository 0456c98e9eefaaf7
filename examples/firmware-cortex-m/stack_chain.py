#!/usr/bin/env python3
"""The deepest call chain of a Cortex-M firmware, read from its machine code: each function's
frame (the registers its prologue pushes and the stack it reserves) and the functions it calls
directly (`bl`, and `b.w` tail calls). Prints the chain from ROOT down, each frame with the
running total and whose code it is, so a stack high-water mark measured under QEMU can be
traced to the frames that make it.

Calls through a pointer (an executor polling a task, a `dyn Fn`, formatting) are not
followed: start from the function the pointer reaches (an embassy task's poll, say). Where the
firmware paints its stack, compare the total with the measured high-water mark: a chain that
reaches it explains it.

usage: stack_chain.py ELF ROOT [--label NAME]   (ROOT: a substring of the root's name; the
deepest of the functions that match is printed)
"""
import re
import subprocess
import sys


def regs_in(args):
    """Registers named in a register list such as {r4, r5, r8-r11, lr}."""
    m = re.search(r"\{([^}]*)\}", args)
    if not m:
        return 0
    n = 0
    for r in m.group(1).split(","):
        r = r.strip()
        if "-" in r:
            a, b = r.split("-")
            n += int(re.sub(r"\D", "", b)) - int(re.sub(r"\D", "", a)) + 1
        elif r:
            n += 1
    return n


def parse(elf):
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", "-C", elf],
                         capture_output=True, text=True, check=True).stdout
    funcs = {}
    cur = None
    for line in out.splitlines():
        m = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if m:
            cur = {"name": m.group(2), "frame": 0, "calls": set(), "tails": set(),
                   "n": 0, "imm": {}}
            funcs[int(m.group(1), 16)] = cur
            continue
        m = re.match(r"^\s+[0-9a-f]+:\s+(\S+)\s*(.*)$", line) if cur else None
        if not m:
            continue
        op, args = m.group(1), m.group(2)
        cur["n"] += 1
        if cur["n"] <= 16:  # the prologue
            if op in ("push", "push.w"):
                cur["frame"] += 4 * regs_in(args)
            elif op.startswith("stmdb") and args.startswith("sp!"):
                cur["frame"] += 4 * regs_in(args)
            elif op.startswith("vpush"):
                cur["frame"] += 8 * regs_in(args)
            elif op in ("movw", "mov.w", "movs", "mov") and "#" in args:
                reg = args.split(",")[0].strip()
                cur["imm"][reg] = int(re.search(r"#(\d+)", args).group(1))
            elif re.match(r"sub(w|\.w|s)?$", op) and args.startswith("sp"):
                parts = [p.strip() for p in args.split(",")]
                last = parts[-1]
                if last.startswith("#"):
                    cur["frame"] += int(re.search(r"#(\d+)", last).group(1))
                elif last in cur["imm"]:
                    cur["frame"] += cur["imm"][last]
        t = re.match(r"^([0-9a-f]+) <", args)
        if t and op in ("bl", "blx"):
            cur["calls"].add(int(t.group(1), 16))
        elif t and op in ("b.w", "b"):
            cur["tails"].add(int(t.group(1), 16))
    for a, f in funcs.items():
        f["tails"] = {t for t in f["tails"] if t in funcs and t != a}
    return funcs


def deepest(funcs, a, seen, memo):
    """(bytes, chain) of the deepest chain from `a`; recursion is cut where it closes."""
    if a in memo:
        return memo[a]
    f = funcs.get(a)
    if f is None or a in seen:
        return 0, ()
    seen = seen | {a}
    called = max((deepest(funcs, c, seen, memo) for c in f["calls"]), default=(0, ()))
    through = (f["frame"] + called[0], (a,) + called[1])
    # A tail call replaces this frame with the callee's.
    tail = max((deepest(funcs, c, seen, memo) for c in f["tails"]), default=(0, ()))
    best = max(through, tail)
    memo[a] = best
    return best


def owner(name):
    for prefix, who in (("ota_", "OTA crates"), ("curve25519", "crypto"), ("ed25519", "crypto"),
                        ("sha2", "crypto"), ("aes", "crypto"), ("ccm", "crypto"),
                        ("firmware", "firmware, test server"), ("embassy", "executor, runtime"),
                        ("cortex_m", "executor, runtime"), ("coap", "CoAP / MQTT codec"),
                        ("minimq", "CoAP / MQTT codec"), ("postcard", "encoding"),
                        ("serde", "encoding"), ("heapless", "encoding")):
        if re.search(r"(^|[<&\s])" + prefix, name):
            return who
    return "core, compiler"


def main():
    elf, root = sys.argv[1], sys.argv[2]
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else elf
    funcs = parse(elf)
    memo = {}
    roots = [a for a, f in funcs.items() if root in f["name"]]
    if not roots:
        sys.exit(f"no function named like {root!r}")
    total, chain = max(deepest(funcs, a, frozenset(), memo) for a in roots)
    print(f"{label}: deepest call chain {total} B of stack (frames as the machine code reserves them)")
    running = 0
    by_owner = {}
    for a in chain:
        f = funcs[a]
        running += f["frame"]
        who = owner(f["name"])
        by_owner[who] = by_owner.get(who, 0) + f["frame"]
        print(f"  {f['frame']:6} {running:6}  {f['name'][:96]}")
    print("  by owner: " + ", ".join(f"{w} {b} B" for w, b in
                                     sorted(by_owner.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
