#!/usr/bin/env bash
# End-to-end over MQTT with the real binaries and a real mosquitto (passwords and the ACL of
# ota-transport-mqtt): a device updates and confirms; its next wake is settled by the retained
# desired state; a release made while it is off is republished by `serve` and reaches it; a
# wrong password is refused. Bounded in time; cleans up.
set -euo pipefail
export PATH=$PATH:/usr/sbin
E2E_NAME=e2e-mqtt
source "$(dirname "$0")/e2e-common.sh"

PW=e2e-secret
for u in ota-server m-1; do
  if [ -f "$T/passwd" ]; then mosquitto_passwd -b "$T/passwd" "$u" "$PW"; else mosquitto_passwd -c -b "$T/passwd" "$u" "$PW"; fi
done
# mosquitto drops root for its own user, which cannot read a checkout in a private directory
# (mode 0700): copy what it reads into a directory it can read.
cp ota-transport-mqtt/mosquitto.acl "$T/mosquitto.acl"
chmod 755 "$T"; chmod 644 "$T/passwd" "$T/mosquitto.acl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous false
password_file $T/passwd
acl_file $T/mosquitto.acl
CONF
mosquitto -c "$T/mosquitto.conf" >"$T/broker.log" 2>&1 &
pids+=($!)
up=0
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && { up=1; break; }; sleep 0.1; done
[ $up = 1 ] || { cat "$T/broker.log"; fail "mosquitto did not start"; }

$S keygen --out "$T/keys" >/dev/null
head -c 120000 /dev/urandom >"$T/v1.1.bin"
$S release --image "$T/v1.1.bin" --version 1.1.0 --class meter --key "$T/keys" --data "$T/data" >/dev/null
$S rollout --version 1.1.0 --class meter --data "$T/data" >/dev/null
$S serve --no-coap --mqtt "mqtt://ota-server:$PW@127.0.0.1:$port" --data "$T/data" --check-in-secs 1 2>"$T/server.log" &
pids+=($!)
sleep 0.5

dev=(--server "mqtt://m-1:$PW@127.0.0.1:$port" --id m-1 --class meter --key "$T/keys" --state "$T/m-1" --wake-every 1 --budget-ms 1500)
echo "--- m-1 updates to 1.1.0"
timeout 120 $D "${dev[@]}" --exit-when-idle --max-wakes 40 2>"$T/m1-a.log" || { cat "$T/m1-a.log" "$T/broker.log" "$T/server.log"; fail "m-1 did not finish"; }
cat "$T/m1-a.log"
grep -q "confirmed 1.1.0" "$T/m1-a.log" || fail "m-1 did not confirm 1.1.0"

echo "--- m-1 wakes again: the retained desired state settles it"
timeout 60 $D "${dev[@]}" --max-wakes 1 2>"$T/m1-b.log" || { cat "$T/m1-b.log"; fail "m-1 wake failed"; }
cat "$T/m1-b.log"
grep -q "no check-in" "$T/m1-b.log" || fail "the idle wake checked in"

echo "--- 1.2.0 is released while m-1 is off; serve republishes its desired state"
head -c 60000 /dev/urandom >"$T/v1.2.bin"
$S release --image "$T/v1.2.bin" --version 1.2.0 --class meter --key "$T/keys" --data "$T/data" >/dev/null
$S rollout --version 1.2.0 --class meter --data "$T/data" >/dev/null
sleep 2
timeout 120 $D "${dev[@]}" --exit-when-idle --max-wakes 40 2>"$T/m1-c.log" || { cat "$T/m1-c.log"; fail "m-1 did not finish"; }
cat "$T/m1-c.log"
grep -q "confirmed 1.2.0" "$T/m1-c.log" || fail "m-1 did not get 1.2.0"

echo "--- a wrong password is refused"
if timeout 30 $D "${dev[@]/$PW/wrong}" --max-wakes 1 2>"$T/m1-d.log"; then cat "$T/m1-d.log"; fail "wrong password accepted"; fi
cat "$T/m1-d.log"
grep -q "refused" "$T/m1-d.log" || fail "no clear refusal"

cat "$T/server.log"
$S status --data "$T/data" | tee "$T/status"
grep -E "^m-1 +meter +1\.2\.0 +1\.2\.0 .*confirmed" "$T/status" >/dev/null || fail "m-1 is not confirmed on 1.2.0"
echo "e2e-mqtt: passed"
