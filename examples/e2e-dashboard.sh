#!/usr/bin/env bash
# The dashboard as a person sees it: `ota-server serve` (SQLite) with a release, a staged rollout
# at its first step and a live fleet of six real `ota-device` processes (two updated, one failing
# its health check, one stopped mid-download, one not reached by the rollout yet, one silent),
# then the page at `/` in headless Chromium (Debian's `chromium`, installed if missing), driven
# over the DevTools protocol by examples/e2e-dashboard-cdp.py. Checks: no console errors (the
# checker is first shown a page with one, which it must catch), and the DOM shows the versions
# across the fleet, the rollout in progress with its devices by phase, the failure with its
# reason, the devices not seen, the bytes per update. Saves a screenshot to
# target/dashboard.png. Loopback only; bounded in time; cleans up.
set -euo pipefail
E2E_NAME=e2e-dashboard
source "$(dirname "$0")/e2e-common.sh"
started=$(date +%s)
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  apt-get install -y chromium >/dev/null || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
  CHROMIUM=/usr/bin/chromium
fi
[ -x "$CHROMIUM" ] || fail "no Chromium"
cdp() { timeout 90 python3 examples/e2e-dashboard-cdp.py "$CHROMIUM" "$@"; }

# The checker must see a console error when there is one.
rc=0
cdp 'data:text/html,<p>x</p><script>deliberately_undefined()</script>' "$T/selftest.html" "$T/selftest.png" >"$T/selftest.out" 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "console error: uncaught: ReferenceError: deliberately_undefined" "$T/selftest.out" \
  || { cat "$T/selftest.out"; fail "the console check missed a deliberate error (exit $rc)"; }

# A release, a staged rollout at its first step (10%, plus three devices by name), six devices.
$S keygen --out "$T/keys" >/dev/null
head -c 200000 /dev/urandom >"$T/v1.1.bin"
$S release --image "$T/v1.1.bin" --version 1.1.0 --class sensor --key "$T/keys" --data "$T/data" >/dev/null
$S rollout --version 1.1.0 --class sensor --steps 10,50,100 --soak-secs 3600 --devices d-1,d-2,d-3 --data "$T/data" >/dev/null
for i in 1 2 3 4 5 6; do $S device add --id "d-$i" --class sensor --out "$T/d-$i.cred" --data "$T/data" >/dev/null; done
TOKEN=$($S token create --name dashboard --data "$T/data")

free_port() { python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.$1); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
coap=$(free_port SOCK_DGRAM); http=$(free_port SOCK_STREAM)
$S serve --coap "127.0.0.1:$coap" --http "127.0.0.1:$http" --data "$T/data" --check-in-secs 1 2>"$T/server.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "serving HTTP" "$T/server.log" && break; sleep 0.1; done
grep -q "serving HTTP" "$T/server.log" || { cat "$T/server.log"; fail "server did not start"; }
api() { curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$http$1"; }

device() { # id, extra flags...
  local id=$1; shift
  timeout 120 $D --server "coap://127.0.0.1:$coap" --id "$id" --class sensor --key "$T/keys" \
    --credentials "$T/$id.cred" --state "$T/$id" --slot-kib 256 "$@" 2>"$T/$id.log" &
  pids+=($!)
}
# d-6 checks in once, on an older version, and is not heard from again; d-3 stops part-way
# through its download (20 000 bytes a wake, two wakes, of a 200 000-byte image: a 30 ms budget
# let it finish on a fast loopback once the window widened); the others keep waking every
# second while the page is read.
device d-6 --version 0.9.0 --max-wakes 1
d6=${pids[-1]}
device d-3 --wake-every 1 --budget-bytes 20000 --max-wakes 2
d3=${pids[-1]}
device d-1 --wake-every 1 --budget-ms 2000 --max-wakes 200 # in the rollout by name
device d-2 --wake-every 1 --budget-ms 2000 --max-wakes 200 --fail-health-check
device d-4 --wake-every 1 --budget-ms 2000 --max-wakes 200 # in the first 10% by its hash
device d-5 --wake-every 1 --max-wakes 200                  # not reached yet
for p in $d6 $d3; do wait "$p" || { tail -5 "$T"/d-*.log; fail "device $p did not finish"; }; done

# Settled: two confirmed, one rolled back, one silent for longer than its check-in interval
# (1 s) and the dashboard's grace.
settled() {
  api /api/v1/fleet >"$T/fleet.json" && api /api/v1/devices >"$T/devices.json" || return 1
  python3 - "$T/fleet.json" "$T/devices.json" <<'EOF2'
import json, sys
fleet, devices = (json.load(open(f)) for f in sys.argv[1:3])
by = {d["id"]: d for d in devices}
ok = (
    all(by.get(i, {}).get("result") == "confirmed" for i in ("d-1", "d-4"))
    and by.get("d-2", {}).get("result") == "rolled back"
    and any(s["id"] == "d-6" for s in fleet["silent"])
)
sys.exit(0 if ok else 1)
EOF2
}
for _ in $(seq 60); do settled && break; sleep 1; done
settled || { cat "$T/devices.json"; fail "the fleet did not settle"; }
echo "e2e-dashboard: fleet settled after $(($(date +%s) - started)) s"
cat "$T/devices.json" | python3 -c 'import json,sys
for d in json.load(sys.stdin): print("  ", d["id"], d["running"], d["phase"], d["result"], d["reason"], d["staged"], d["size"])'

# The page, through the token-in-the-address route a person uses (it becomes a cookie).
mkdir -p target
rc=0
cdp "http://127.0.0.1:$http/?token=$TOKEN" "$T/dom.html" target/dashboard.png >"$T/cdp.out" 2>&1 || rc=$?
cat "$T/cdp.out"
[ "$rc" != 2 ] || fail "the page did not load"
[ "$rc" = 0 ] || fail "console errors on the dashboard"
grep -q "document status: 303 -> 200\|document status: 200" "$T/cdp.out" || fail "the page did not answer 200"

# What the page says, section by section (text only, tags stripped).
python3 - "$T/dom.html" >"$T/sections" <<'EOF'
import html.parser, sys
class P(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(); self.sections = {}; self.cur = None; self.depth = 0
    def handle_starttag(self, tag, attrs):
        if tag == "section": self.cur = dict(attrs).get("id"); self.sections[self.cur] = []
        if tag in ("td", "th", "span", "p", "h2", "h3", "b", "div", "i") and self.cur: self.sections[self.cur].append(" ")
        for k, v in attrs:
            if k == "title" and self.cur: self.sections[self.cur].append(f" [{v}] ")
    def handle_endtag(self, tag):
        if tag == "section": self.cur = None
        if tag == "tr" and self.cur: self.sections[self.cur].append("\n")
    def handle_data(self, d):
        if self.cur: self.sections[self.cur].append(d)
p = P(); p.feed(open(sys.argv[1]).read())
for k, v in p.sections.items():
    text = "".join(v)
    for line in text.splitlines():
        line = " ".join(line.split())
        if line: print(f"{k}: {line}")
EOF
cat "$T/sections"
has() { grep -Eq "^$1: .*$2" "$T/sections" || fail "$1 does not show: $2"; }
has versions "sensor 1\.1\.0 2\b"
has versions "sensor 1\.0\.0 3\b"
has versions "sensor 0\.9\.0 1\b"
has rollouts "sensor → 1\.1\.0 running"
has rollouts "steps 10% → 50% → 100% · offered to 10% · 2 of 6 devices on 1\.1\.0"
has rollouts "\[downloading: 1\]"
has rollouts "\[not in rollout yet: 2\]"
has rollouts "\[rolled back: 1\]"
has rollouts "\[up to date: 2\]"
has failures "rolled back health check failed 1 d-2"
has silent "d-6 sensor 0\.9\.0 [0-9]+ s 1 s"
# release, image, devices, sent, of which patch (none here: no --delta-from), confirmed, per confirmed
has bytes "sensor 1\.1\.0 200000 4 [0-9]+ 0 2 [0-9]+ \([0-9.]+×\)"
# Bytes per update: two full images and part of a third, at least.
sent=$(grep -E "^bytes: sensor 1\.1\.0" "$T/sections" | awk '{print $6}')
[ "$sent" -ge 400000 ] || fail "bytes sent $sent, expected at least two images"
[ -s target/dashboard.png ] || fail "no screenshot"
echo "e2e-dashboard: screenshot at target/dashboard.png ($(stat -c %s target/dashboard.png) bytes)"
echo "e2e-dashboard: 1 passed, 0 failed ($(($(date +%s) - started)) s)"
