#!/usr/bin/env python3
"""Writes a mosquitto dynamic-security configuration for an update fleet.

mosquitto's ACL file cannot refuse a subscription (2.0 checks it only when a message is
delivered), so a device could join the servers' shared subscription and black-hole requests.
The dynamic security plugin checks subscriptions when they are made. This script writes its
JSON: every access denied by default; each server may take every device's requests through a
shared subscription and answer on every device's down topics; each device may publish only to
its own request topics and read only its own down topics.

    python3 dynsec.py --prefix ota --server ota-server:PASSWORD --device dev-1:PASSWORD ... > dynsec.json

Passwords are stored as mosquitto stores them (PBKDF2-SHA512, 101 iterations, random salt).
Device ids follow ota-core's rule (A-Z a-z 0-9 . _ : -), so they are literal topic levels.
"""
import argparse
import base64
import hashlib
import json
import os
import re
import sys

ID = re.compile(r"^[A-Za-z0-9._:-]{1,32}$")


def client(user, password, role):
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
    return {
        "username": user,
        "roles": [{"rolename": role}],
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": 101,
    }


def acl(kind, topic):
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefix", default="ota")
    ap.add_argument("--server", action="append", default=[], metavar="USER:PASSWORD")
    ap.add_argument("--device", action="append", default=[], metavar="ID:PASSWORD")
    a = ap.parse_args()
    p = a.prefix
    clients, roles = [], []
    server_acls = []
    for k in "cqr":
        server_acls.append(acl("subscribePattern", f"$share/+/{p}/+/{k}"))
        server_acls.append(acl("publishClientReceive", f"{p}/+/{k}"))
    for k in "ds":
        server_acls.append(acl("publishClientSend", f"{p}/+/{k}"))
    roles.append({"rolename": "ota-server", "acls": server_acls})
    for spec in a.server:
        user, _, password = spec.partition(":")
        clients.append(client(user, password, "ota-server"))
    for spec in a.device:
        dev, _, password = spec.partition(":")
        if not ID.match(dev):
            sys.exit(f"dynsec.py: device id {dev!r} breaks the device id rule")
        acls = [acl("publishClientSend", f"{p}/{dev}/{k}") for k in "cqr"]
        for k in "ds":
            acls.append(acl("subscribeLiteral", f"{p}/{dev}/{k}"))
            acls.append(acl("publishClientReceive", f"{p}/{dev}/{k}"))
        roles.append({"rolename": f"device-{dev}", "acls": acls})
        clients.append(client(dev, password, f"device-{dev}"))
    json.dump(
        {
            "defaultACLAccess": {
                "publishClientSend": False,
                "publishClientReceive": False,
                "subscribe": False,
                "unsubscribe": True,
            },
            "clients": clients,
            "groups": [],
            "roles": roles,
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
