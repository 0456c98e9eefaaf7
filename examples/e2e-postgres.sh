#!/usr/bin/env bash
# Two `ota-server serve` instances on one PostgreSQL database, sharing one UDP port with
# SO_REUSEPORT (the kernel spreads devices over both, and sends everything to the survivor when
# one dies): 100 real device processes (ota-device: the device stack over CoAP and OSCORE, file
# flash) update, 5 of them failing their health check; one instance is killed (SIGKILL) while
# devices are mid-download. Every device must finish, the store must agree with what the
# devices did, and nothing may be offered twice: one offer per device, none after a rollback,
# no download restarted from zero. Bounded in time; cleans up. Needs PostgreSQL (started here
# through examples/pg-harness.sh, installed if missing).
set -euo pipefail
E2E_NAME=e2e-postgres
DEVICES=${DEVICES:-100}
FAILING=5
source "$(dirname "$0")/e2e-common.sh"
source examples/pg-harness.sh
trap 'cleanup; pg_harness_stop' EXIT
started=$(date +%s)

pg_harness_start
DB=$OTA_PG_URL
q() { psql "$DB" -qAt -c "$1"; }

$S keygen --out "$T/keys" >/dev/null
head -c 96000 /dev/urandom >"$T/v1.1.bin"
$S release --image "$T/v1.1.bin" --version 1.1.0 --class meter --key "$T/keys" --db "$DB"
$S rollout --version 1.1.0 --class meter --db "$DB"
for i in $(seq -w 1 "$DEVICES"); do
  $S device add --id "m-$i" --class meter --out "$T/m-$i.cred" --db "$DB" >/dev/null
done
TOKEN=$($S token create --name e2e --db "$DB")
echo "$DEVICES devices provisioned, release 1.1.0 (96000 bytes) rolled out to all"

port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_a=$(free_tcp); http_b=$(free_tcp)
$S serve --coap "127.0.0.1:$port" --coap-sockets 1 --http "127.0.0.1:$http_a" --db "$DB" --check-in-secs 1 2>"$T/a.log" &
a=$!; pids+=($a)
$S serve --coap "127.0.0.1:$port" --coap-sockets 1 --http "127.0.0.1:$http_b" --db "$DB" --check-in-secs 1 2>"$T/b.log" &
b=$!; pids+=($b)
for _ in $(seq 100); do grep -q "serving HTTP" "$T/a.log" && grep -q "serving HTTP" "$T/b.log" && break; sleep 0.1; done
grep -q "serving CoAP" "$T/a.log" && grep -q "serving CoAP" "$T/b.log" || { cat "$T/a.log" "$T/b.log"; fail "instances did not start"; }
metric() { curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

devs=()
for i in $(seq -w 1 "$DEVICES"); do
  extra=()
  [ "$((10#$i))" -le $FAILING ] && extra=(--fail-health-check)
  timeout 300 $D --server "coap://127.0.0.1:$port" --id "m-$i" --class meter --key "$T/keys" \
    --credentials "$T/m-$i.cred" --state "$T/m-$i" --wake-every 1 --budget-ms 400 --budget-bytes 40000 \
    --exit-when-idle --max-wakes 200 "${extra[@]}" 2>"$T/m-$i.log" &
  devs+=($!)
done

# Kill instance A once it has served check-ins and at least 20 devices are mid-download.
mid=0
for _ in $(seq 300); do
  mid=$(q "SELECT COUNT(*) FROM devices WHERE phase = 'downloading' AND staged > 0 AND staged < size")
  [ "$mid" -ge 20 ] && break
  sleep 0.1
done
a_checkins=$(metric "$http_a" ota_checkins_total)
a_bytes=$(metric "$http_a" ota_image_bytes_sent_total)
kill -9 "$a"
echo "instance A killed with $mid devices mid-download; it had answered $a_checkins check-ins and sent $a_bytes image bytes"
[ "${a_checkins:-0}" -gt 0 ] || fail "instance A served no check-in: devices were not spread over both"
[ "$mid" -ge 20 ] || fail "fewer than 20 devices were mid-download when A was killed"

failed=0
for p in "${devs[@]}"; do wait "$p" || failed=$((failed + 1)); done
if [ "$failed" -gt 0 ]; then
  for f in "$T"/m-*.log; do tail -3 "$f" | sed "s|^|$(basename "$f" .log): |"; done | tail -40
  tail -20 "$T/b.log"
  fail "$failed devices did not finish"
fi
b_checkins=$(metric "$http_b" ota_checkins_total)
echo "every device finished; instance B answered $b_checkins check-ins"

$S status --db "$DB" >"$T/status"
rows=$(grep -c '^m-' "$T/status")
confirmed=$(q "SELECT COUNT(*) FROM devices WHERE running = '1.1.0' AND result = 'confirmed'")
rolled=$(q "SELECT COUNT(*) FROM devices WHERE running = '1.0.0' AND result = 'rolled back' AND reason = 'health check failed'")
twice=$(q "SELECT COUNT(*) FROM (SELECT device FROM events WHERE kind = 'offered' GROUP BY device HAVING COUNT(*) > 1) AS x")
after=$(q "SELECT COUNT(*) FROM events e JOIN events r ON r.device = e.device AND r.kind = 'rolled back' AND e.id > r.id WHERE e.kind IN ('offered', 'downloading')")
restarted=$(q "SELECT COUNT(*) FROM transfers WHERE bytes > 96000 * 3 / 2")
floors=$(q "SELECT COUNT(*) FROM credentials WHERE floor IS NULL")
echo "status rows $rows; confirmed on 1.1.0: $confirmed; rolled back (health check failed): $rolled"
echo "devices offered the release twice: $twice; offers after a rollback: $after; transfers above 1.5x the image: $restarted; devices without a replay floor: $floors"
q "SELECT 'bytes per confirmed device: min ' || MIN(bytes) || ', max ' || MAX(bytes) || ', mean ' || AVG(bytes)::bigint FROM transfers WHERE outcome = 'success'"
if [ "$confirmed" -ne $((DEVICES - FAILING)) ] || [ "$rolled" -ne $FAILING ]; then
  # The devices in neither expected state: their status rows and the end of their own logs.
  odd=$(q "SELECT id FROM devices WHERE NOT ((running = '1.1.0' AND result = 'confirmed') OR (running = '1.0.0' AND result = 'rolled back'))")
  head -1 "$T/status"
  for id in $odd; do
    grep "^$id " "$T/status" || true
    tail -15 "$T/$id.log" | sed "s|^|$id: |"
  done
fi
[ "$rows" -eq "$DEVICES" ] || fail "status shows $rows devices"
[ "$confirmed" -eq $((DEVICES - FAILING)) ] || fail "$confirmed devices confirmed 1.1.0"
[ "$rolled" -eq $FAILING ] || fail "$rolled devices rolled back"
[ "$twice" -eq 0 ] || fail "$twice devices were offered the release twice"
[ "$after" -eq 0 ] || fail "$after offers after a rollback"
[ "$restarted" -eq 0 ] || fail "$restarted downloads restarted from zero"
[ "$floors" -eq 0 ] || fail "$floors devices have no replay floor"
kill "$b" 2>/dev/null || true
echo "e2e-postgres: 1 passed, 0 failed ($(( $(date +%s) - started )) s)"
