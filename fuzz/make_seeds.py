#!/usr/bin/env python3
"""Writes the seed corpora: the golden vectors of ota-core/tests/golden.rs and a few hand-built
inputs per target. Run from fuzz/; .ci/run calls it before fuzzing."""
import os, re, struct, zlib

here = os.path.dirname(os.path.abspath(__file__))
golden = open(os.path.join(here, "..", "ota-core", "tests", "golden.rs")).read()

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# Every golden message, for the wire decoders (and as raw datagram payloads).
vectors = re.findall(r'\(\s*"([a-z ]+)",.*?"([0-9a-f]{16,})"', golden, re.S)
for name, hx in vectors:
    put("wire_decode", name.replace(" ", "_"), bytes.fromhex(hx))
body = bytes.fromhex(re.search(r'MANIFEST_BODY: &str =\s*"([0-9a-f]+)"', golden).group(1))
put("manifest_verify", "golden", bytes([0x33] * 64) + body)
put("manifest_verify", "stored", bytes([len(body)]) + body + bytes([0x33] * 64))
put("wire_decode", "resume_state", bytes([0x44] * 32) + struct.pack("<III", 3, 73728, 5) + b"\x01")

# Stream framing: a COBS frame of a golden check-in with its CRC, twice, with noise between.
def cobs(data):
    out, block = bytearray(), bytearray()
    for b in data:
        if b == 0:
            out += bytes([len(block) + 1]) + block; block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out += bytes([255]) + block; block = bytearray()
    return bytes(out + bytes([len(block) + 1]) + block)
msg = bytes.fromhex(vectors[0][1])
frame = cobs(msg + struct.pack("<I", zlib.crc32(msg))) + b"\x00"
put("stream_framing", "frames", frame + b"\x17\x99\x00" + frame)

# Journal: a header, a state record and a progress record (len | kind | payload | crc), padded.
def rec(kind, payload):
    r = bytes([len(payload), kind]) + payload
    r += struct.pack("<I", zlib.crc32(r))
    return r + b"\xff" * (-len(r) % 4)
journal = rec(1, b"OTAJ" + struct.pack("<I", 1)) + rec(4, bytes([2, 0, 0, 0, 0, 0])) + rec(3, struct.pack("<III", 1, 512, 0))
put("journal_records", "journal", journal + b"\xff" * (1024 - len(journal)))

# CoAP: a confirmable GET of block 3 of image 7 (Block2 3/_/1024), and a check-in POST.
def opt(delta, value):
    return bytes([(delta << 4) | len(value)]) + value
get = bytes([0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD]) + opt(11, b"ota") + opt(0, b"i") + opt(0, b"7") + opt(12, bytes([0x36]))
put("coap_server", "block_get", get)
post = bytes([0x42, 0x02, 0x12, 0x35, 0xAB, 0xCE]) + opt(11, b"ota") + opt(0, b"c") + b"\xff" + msg
put("coap_server", "checkin_post", post)
put("coap_client", "ack", bytes([0x62, 0x44, 0x00, 0x02, 0x00, 0x02]) + b"\xff" + bytes.fromhex(vectors[2][1]))

# MQTT: the golden check-in on its device's topic, and a chunk request (topic length first).
def mqtt(topic, payload):
    return bytes([len(topic)]) + topic + payload
put("mqtt_server", "checkin", mqtt(b"ota/dev-0001/c", msg))
put("mqtt_server", "request", mqtt(b"ota/dev-0001/q", bytes.fromhex(dict(vectors)["chunk request"])))

# The state machine: the offer, then the five real chunks in order (stages the image).
put("device_machine", "offer_then_chunks", bytes([0, 1, 0, 1, 1, 1, 2, 1, 3, 1, 4]))
put("device_machine", "offer_reordered", bytes([0, 1, 4, 1, 2, 4, 1, 0, 1, 1, 1, 3]))
print("seeds written under", os.path.join(here, "corpus"))
