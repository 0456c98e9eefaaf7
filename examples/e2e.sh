#!/usr/bin/env bash
# End-to-end test of the real binaries: keygen, release, rollout, serve, two ota-device
# processes (one healthy, one failing its health check), then status; then a point release sent
# to the healthy one as a patch. Bounded in time; cleans up.
set -euo pipefail
E2E_NAME=e2e
source "$(dirname "$0")/e2e-common.sh"

# A command that must fail with a one-line error and a non-zero exit.
must_fail() {
  local what=$1; shift
  if "$@" >"$T/out" 2>"$T/err"; then fail "$what: succeeded"; fi
  [ "$(wc -l <"$T/err")" -eq 1 ] || fail "$what: error is not one line: $(cat "$T/err")"
  echo "e2e: refused as expected ($what): $(cat "$T/err")"
}

$S keygen --out "$T/keys"
$S keygen --out "$T/other-keys"
head -c 150000 /dev/urandom >"$T/v1.1.bin"
$S release --image "$T/v1.1.bin" --version 1.1.0 --class sensor --key "$T/keys" --data "$T/data" | tee "$T/rel"
grep -q "sequence 1" "$T/rel" || fail "first release is not sequence 1"

must_fail "missing image" $S release --image "$T/nope.bin" --version 1.2.0 --class sensor --key "$T/keys" --data "$T/data"
must_fail "version not greater" $S release --image "$T/v1.1.bin" --version 1.1.0 --class sensor --key "$T/keys" --data "$T/data"
must_fail "not a signing key" $S release --image "$T/v1.1.bin" --version 1.2.0 --class sensor --key "$T/v1.1.bin" --data "$T/data"
must_fail "a public key to sign with" $S release --image "$T/v1.1.bin" --version 1.2.0 --class sensor --key "$T/keys/public.key" --data "$T/data"
must_fail "unknown class" $S rollout --version 1.1.0 --class nosuch --data "$T/data"
must_fail "unknown version" $S rollout --version 9.9.9 --class sensor --data "$T/data"
must_fail "bad window" $S rollout --version 1.1.0 --class sensor --window 25:00-26:00 --data "$T/data"
# Nothing half-written: the next good release still gets sequence 2.
head -c 1000 /dev/urandom >"$T/v1.2.bin"
$S release --image "$T/v1.2.bin" --version 1.2.0 --class other --key "$T/other-keys" --data "$T/data" >/dev/null
$S release --image "$T/v1.1.bin" --version 1.1.1 --class sensor --key "$T/keys" --data "$T/data" | grep -q "sequence 2" \
  || fail "a refused release left something behind"

$S rollout --version 1.1.1 --class sensor --percent 100 --data "$T/data"
# Each device provisioned with its own OSCORE context.
for d in dev-ok dev-bad; do $S device add --id "$d" --class sensor --out "$T/$d.cred" --data "$T/data"; done
must_fail "a device id with a slash" $S device add --id "a/b" --class sensor --out "$T/x.cred" --data "$T/data"
must_fail "a device id of 33 bytes" $S device add --id "$(printf 'd%.0s' $(seq 33))" --class sensor --out "$T/x.cred" --data "$T/data"
must_fail "a device provisioned twice" $S device add --id dev-ok --class sensor --out "$T/x.cred" --data "$T/data"
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$S serve --coap "127.0.0.1:$port" --data "$T/data" --check-in-secs 1 2>"$T/server.log" &
pids+=($!)
sleep 0.5

common=(--server "coap://127.0.0.1:$port" --class sensor --key "$T/keys" --wake-every 1 --budget-ms 1500 --exit-when-idle --max-wakes 40)
timeout 120 $D "${common[@]}" --id dev-ok --credentials "$T/dev-ok.cred" --state "$T/dev-ok" 2>"$T/dev-ok.log" &
ok=$!
timeout 120 $D "${common[@]}" --id dev-bad --credentials "$T/dev-bad.cred" --state "$T/dev-bad" --fail-health-check 2>"$T/dev-bad.log" &
bad=$!
wait "$ok" || { cat "$T/dev-ok.log"; fail "healthy device did not finish"; }
wait "$bad" || { cat "$T/dev-bad.log"; fail "failing device did not finish"; }
echo "--- dev-ok"; cat "$T/dev-ok.log"
echo "--- dev-bad"; cat "$T/dev-bad.log"

$S status --data "$T/data" | tee "$T/status"
grep -E "^dev-ok +sensor +1\.1\.1 +1\.1\.1 .*confirmed" "$T/status" >/dev/null || fail "dev-ok is not confirmed on 1.1.1"
grep -E "^dev-bad +sensor +1\.0\.0 +1\.1\.1 .*rolled back +health check failed" "$T/status" >/dev/null \
  || fail "dev-bad is not rolled back with its reason"
# A point release as a patch from 1.1.1: dev-ok fetches the patch and rebuilds 1.1.2 in its flash.
python3 - "$T/v1.1.bin" "$T/v1.1.2.bin" <<'PY'
import sys
b = bytearray(open(sys.argv[1], 'rb').read())
b[50000:50016] = b'version 1.1.2 ok'
b[75000:75000] = bytes(range(64))
open(sys.argv[2], 'wb').write(b)
PY
must_fail "a patch from an unknown version" $S release --image "$T/v1.1.2.bin" --version 1.1.2 --class sensor --key "$T/keys" --data "$T/data" --delta-from 0.9.0
$S release --image "$T/v1.1.2.bin" --version 1.1.2 --class sensor --key "$T/keys" --data "$T/data" --delta-from 1.1.1 | tee "$T/rel"
grep -qE "patch from 1\.1\.1: image id [0-9]+, [0-9]+ bytes" "$T/rel" || fail "no patch from 1.1.1"
$S rollout --version 1.1.2 --class sensor --percent 100 --data "$T/data"
sleep 1  # serve picks up a rollout within half a second
timeout 120 $D "${common[@]}" --id dev-ok --credentials "$T/dev-ok.cred" --state "$T/dev-ok" 2>"$T/dev-ok.log" \
  || { cat "$T/dev-ok.log"; fail "healthy device did not take the point release"; }
$S status --data "$T/data" | tee "$T/status"
patch=$(grep -oE "[0-9]+ bytes, [0-9.]+ % of" "$T/rel" | grep -oE "^[0-9]+")
grep -E "^dev-ok +sensor +1\.1\.2 +1\.1\.2 .* $patch patch +confirmed" "$T/status" >/dev/null \
  || fail "dev-ok is not confirmed on 1.1.2 with only the $patch-byte patch sent"
# A reader that closes the pipe early ends status quietly (no "Broken pipe" panic): head -0 has
# exited before status writes.
rc=0; { sleep 0.3; $S status --data "$T/data" 2>"$T/pipe.err"; } | head -0 || rc=$?
[ "$rc" = 0 ] && [ ! -s "$T/pipe.err" ] || { cat "$T/pipe.err"; fail "status | head -1 did not end quietly"; }
echo "e2e: 3 passed, 0 failed"
