"""aiocoap as a device: checks in and fetches block 0 of an image through our server, over the
OSCORE context `ota-server device add --aiocoap DIR` wrote.

    python3 aiocoap_client.py coap://127.0.0.1:PORT CONTEXT_DIR CHECKIN_FILE IMAGE_ID OUT_DIR

Writes OUT_DIR/reply (the check-in reply payload) and OUT_DIR/block0 (the block's payload), and
prints the response codes.
"""
import asyncio
import sys

import aiocoap
from aiocoap import GET, POST, Message
from aiocoap.optiontypes import BlockOption


async def main(base, ctxdir, checkin_file, image, out):
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict({base + "/*": {"oscore": {"basedir": ctxdir}}})
    with open(checkin_file, "rb") as f:
        checkin = f.read()
    r = await asyncio.wait_for(
        ctx.request(Message(code=POST, uri=base + "/ota/c", payload=checkin)).response, 20
    )
    print("check-in", r.code)
    with open(out + "/reply", "wb") as f:
        f.write(r.payload)
    block = BlockOption.BlockwiseTuple(0, False, 6)
    r = await asyncio.wait_for(
        ctx.request(
            Message(code=GET, uri=f"{base}/ota/i/{image}", block2=block), handle_blockwise=False
        ).response,
        20,
    )
    print("block0", r.code, r.opt.block2)
    with open(out + "/block0", "wb") as f:
        f.write(r.payload)
    await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
