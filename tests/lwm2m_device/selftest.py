#!/usr/bin/env python3
"""Self test of aiocoap_device.py without the engine: a small LwM2M server made with aiocoap
(registration interface, a Block2 package server) drives the device as a child process through
registration, reads, observe and both cancellations, push (Block1) and pull (Block2), the
updaters' verdicts, the reset modes, 4.13, Update 4.04, and a kill and restart in the middle
of a push in the blocks profile. Prints one line per check and "N passed, N failed".

    python3 tests/lwm2m_device/selftest.py [-k NAME]
"""

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message
from aiocoap.numbers.types import ACK, CON, RST
from aiocoap.optiontypes import BlockOption

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ left in the work tree
import aiocoap_device as dev  # noqa: E402  (its TLV decoder and updaters)

SCRIPT = os.path.join(HERE, "aiocoap_device.py")
warnings.simplefilter("ignore", DeprecationWarning)  # the raw peer sets MIDs and tokens itself
BOUND = 20.0


class Registrations(resource.Resource):
    """POST /rd: Register."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_post(self, request):
        query = dict(q.split("=", 1) for q in request.opt.uri_query if "=" in q)
        n = len(self.server.registers) + 1
        self.server.registers.append((query, request.payload.decode(), int(request.opt.content_format), request.remote))
        self.server.locations[str(n)] = query["ep"]
        return Message(code=Code.CREATED, location_path=["rd", str(n)])


class Updates(resource.Resource, resource.PathCapable):
    """POST /rd/<id>: Update; 4.04 for an id forgotten (`server.forget`)."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    async def render_post(self, request):
        key = request.opt.uri_path[0] if request.opt.uri_path else ""
        self.server.updates.append(key)
        if key not in self.server.locations:
            return Message(code=Code.NOT_FOUND)
        return Message(code=Code.CHANGED)


class Firmware(resource.Resource):
    def __init__(self, body):
        super().__init__()
        self.body = body

    async def render_get(self, request):
        return Message(code=Code.CONTENT, payload=self.body, content_format=42)


class Server:
    async def start(self):
        self.registers, self.updates, self.locations = [], [], {}
        self.site = resource.Site()
        self.site.add_resource(["rd"], Registrations(self))
        self.site.add_resource(["rd"], Updates(self))
        self.ctx = await aiocoap.Context.create_server_context(self.site, bind=("127.0.0.1", 0), transports=["udp6"])
        mi = self.ctx.request_interfaces[0].token_interface.message_interface
        self.port = mi.transport.get_extra_info("socket").getsockname()[1]
        return self

    def serve(self, path, body):
        self.site.add_resource(path, Firmware(body))

    async def request(self, device, code, path, payload=b"", **options):
        m = Message(code=code, uri=f"coap://127.0.0.1:{device.port}/{path.strip('/')}", payload=payload, **options)
        return await asyncio.wait_for(self.ctx.request(m).response, BOUND)

    async def push_blocks(self, device, package, size, start_block=0, stop_after=None):
        """Block1 writes to /5/0/0, block by block; returns the last response."""
        szx = size.bit_length() - 5
        count = (len(package) + size - 1) // size
        last = None
        for n in range(start_block, count):
            chunk = package[n * size:(n + 1) * size]
            more = n + 1 < count
            m = Message(code=Code.PUT, uri=f"coap://127.0.0.1:{device.port}/5/0/0", payload=chunk,
                        content_format=42, block1=BlockOption.BlockwiseTuple(n, more, szx))
            last = await asyncio.wait_for(self.ctx.request(m, handle_blockwise=False).response, BOUND)
            if not last.code.is_successful():
                return last
            if stop_after is not None and n + 1 - start_block >= stop_after:
                return last
        return last


class DeviceProcess:
    def __init__(self, server, endpoint, *options):
        self.server, self.endpoint, self.options = server, endpoint, list(options)
        self.dir = tempfile.mkdtemp(prefix=f"aiocoap-dev-{endpoint}-")
        self.proc = None
        self.log = os.path.join(self.dir, "stderr.log")

    def spawn(self, bind="127.0.0.1:0"):
        try:
            os.remove(os.path.join(self.dir, "status.json"))
        except FileNotFoundError:
            pass
        args = [sys.executable, SCRIPT, "--server", f"127.0.0.1:{self.server.port}", "--endpoint", self.endpoint,
                "--dir", self.dir, "--bind", bind, *self.options]
        self.proc = subprocess.Popen(args, stderr=open(self.log, "ab"))
        return self

    def status(self):
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (FileNotFoundError, ValueError):
            return {}

    async def wait(self, what, pred, bound=BOUND):
        deadline = time.monotonic() + bound
        while time.monotonic() < deadline:
            status = self.status()
            if status and status.get("pid") == self.proc.pid and pred(status):
                return status
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        raise AssertionError(f"{self.endpoint}: {what} not seen in {bound} s; status {self.status()}\n{self.tail()}")

    @property
    def port(self):
        return self.status()["port"]

    def tail(self, n=25):
        with open(self.log, errors="replace") as f:
            return "".join(f.readlines()[-n:])

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        if os.environ.get("KEEP_DEVICE_DIRS"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def image(version, size=5000, seed=1):
    rnd = random.Random(seed)
    body = bytearray(rnd.getrandbits(8) for _ in range(size))
    marker = b"FWVER:" + version.encode() + b"\x00"
    body[1000:1000 + len(marker)] = marker
    return bytes(body)


def acme(version, payload, corrupt=False):
    body = b"ACME" + bytes([len(version)]) + version.encode() + len(payload).to_bytes(4, "big") + payload
    crc = zlib.crc32(body) ^ (1 if corrupt else 0)
    return body + crc.to_bytes(4, "big")


# --- checks ---------------------------------------------------------------------------------

async def registered(server, *options, endpoint=None):
    d = DeviceProcess(server, endpoint or f"ep{random.randrange(10**6)}", *options).spawn()
    await d.wait("registered", lambda s: s["registered"])
    return d


async def check_registration(server):
    d = await registered(server, "--lwm2m", "1.1", "--lifetime", "60")
    try:
        query, links, ct, remote = server.registers[-1]
        assert query["ep"] == d.endpoint and query["lt"] == "60" and query["lwm2m"] == "1.1" and query["b"] == "U", query
        assert ct == 40, ct
        assert links.startswith('</>;rt="oma.lwm2m";ct=110,') and "</5/0>" in links and "</3/0>" in links, links
        assert remote.sockaddr[1] == d.port, (remote.sockaddr, d.port)
        s = d.status()
        assert s["location"] == f"/rd/{len(server.registers)}" and s["registrations"] == 1, s
    finally:
        d.close()


async def check_lwm2m_1_0(server):
    d = await registered(server, "--lwm2m", "1.0")
    try:
        query, links, _ct, _remote = server.registers[-1]
        assert query["lwm2m"] == "1.0" and links == '</>;rt="oma.lwm2m",</1/0>,</3/0>,</4/0>,</5/0>', links
        r = await server.request(d, Code.GET, "/3/0", accept=110)
        assert r.code == Code.NOT_ACCEPTABLE, r
    finally:
        d.close()


async def check_bad_input(server):
    d = await registered(server)
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for junk in (b"", b"\xff" * 40, b"\x40\x01\x00\x01\xff", bytes(range(256))):
            sock.sendto(junk, ("127.0.0.1", d.port))
        for payload, cf in ((b"\xc8\x01\xff", 11542), (b"[{", 110), (b"\xff\xfe", 0), (b"x", 11543)):
            r = await server.request(d, Code.PUT, "/5/0/1", payload, content_format=cf)
            assert r.code in (Code.BAD_REQUEST, Code.UNSUPPORTED_CONTENT_FORMAT), (payload, r)
        for code, path in ((Code.DELETE, "/5/0"), (Code.POST, "/5"), (Code.PUT, "/5/0"), (Code.FETCH, "/3/0")):
            r = await server.request(d, code, path, b"\x00")
            assert r.code == Code.METHOD_NOT_ALLOWED, (code, path, r)
        r = await server.request(d, Code.GET, "/3/0/3")
        assert r.payload == b"1.0" and d.proc.poll() is None, r
        assert d.status()["last_error"] is None, d.status()
    finally:
        d.close()


async def check_reads(server):
    d = await registered(server, "--power-source", "1", "5", "--battery", "77", "--profile", "blocks")
    try:
        r = await server.request(d, Code.GET, "/3/0/3")
        assert r.code == Code.CONTENT and r.payload == b"1.0" and int(r.opt.content_format) == 0, r
        r = await server.request(d, Code.GET, "/3/0/9", accept=11542)
        assert int(r.opt.content_format) == 11542 and dev.tlv_decode(r.payload) == [(3, 9, bytes([77]))], r.payload
        r = await server.request(d, Code.GET, "/3/0/6")
        assert int(r.opt.content_format) == 11542, r
        assert dev.tlv_decode(r.payload) == [(2, 6, dev.tlv_entry(1, 0, b"\x01") + dev.tlv_entry(1, 1, b"\x05"))], r.payload
        r = await server.request(d, Code.GET, "/3/0/6", accept=0)
        assert r.code == Code.NOT_ACCEPTABLE, r
        r = await server.request(d, Code.GET, "/3/0/6/1")
        assert r.payload == b"5", r
        r = await server.request(d, Code.GET, "/3/0")
        top = {ident: value for _k, ident, value in dev.tlv_decode(r.payload)}
        assert top[0] == b"acme" and top[1] == b"NB-S" and top[3] == b"1.0", top
        r = await server.request(d, Code.GET, "/5/0")
        top = {ident: value for _k, ident, value in dev.tlv_decode(r.payload)}
        assert top[3] == b"\x00" and top[9] == b"\x02" and 26500 in top and 0 not in top, top
        r = await server.request(d, Code.GET, "/5/0", accept=110)
        records = json.loads(r.payload)
        assert records[0]["bn"] == "/5/0/" and {"n": "3", "v": 0} in records[1:] + [{k: v for k, v in records[0].items() if k != "bn"}], records
        r = await server.request(d, Code.GET, "/3", accept=110)
        assert any(x.get("n") == "0/6/1" and x.get("v") == 5 for x in json.loads(r.payload)), r.payload
        r = await server.request(d, Code.GET, "/5/0/3", accept=110)
        assert json.loads(r.payload) == [{"bn": "/5/0/3", "v": 0}], r.payload
        for path, code in (("/9/0", Code.NOT_FOUND), ("/3/0/99", Code.NOT_FOUND), ("/5/0/0", Code.METHOD_NOT_ALLOWED),
                           ("/5/0/2", Code.METHOD_NOT_ALLOWED)):
            r = await server.request(d, Code.GET, path)
            assert r.code == code, (path, r)
        r = await server.request(d, Code.PUT, "/3/0/9", b"5", content_format=0)
        assert r.code == Code.METHOD_NOT_ALLOWED, r
        r = await server.request(d, Code.POST, "/5/0/2")
        assert r.code == Code.METHOD_NOT_ALLOWED, r
    finally:
        d.close()


class Raw:
    """A bare UDP CoAP peer, for what aiocoap's client does not let one do (Observe 1 on a token)."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.to = ("127.0.0.1", port)
        self.mid = random.randrange(1 << 16)

    def send(self, **fields):
        self.mid = (self.mid + 1) & 0xFFFF
        m = Message(mtype=CON, mid=self.mid, **fields)
        self.sock.sendto(m.encode(), self.to)

    def receive(self, ack=True, rst=False):
        while True:
            m = Message.decode(self.sock.recv(2048))
            if m.mtype == CON:
                reply = Message(mtype=RST if rst else ACK, mid=m.mid, code=Code.EMPTY)
                if ack or rst:
                    self.sock.sendto(reply.encode(), self.to)
            if m.code != Code.EMPTY:
                return m


async def check_observe(server):
    d = await registered(server, "--reset", "null-byte")
    try:
        raw = Raw(d.port)
        raw.send(code=Code.GET, token=b"\x01\x02", uri_path=("5", "0", "3"), observe=0)
        first = await asyncio.to_thread(raw.receive)
        assert first.code == Code.CONTENT and first.opt.observe is not None and first.payload == b"0", first
        raw.send(code=Code.GET, token=b"\x09", uri_path=("5", "0", "5"), observe=0)
        await asyncio.to_thread(raw.receive)
        await d.wait("2 observations", lambda s: s["observations"].get("/5/0/3") == 1 and s["observations"].get("/5/0/5") == 1)
        # a change notifies: a push of a bad package goes Downloading and back to Idle, result 6
        r = await server.push_blocks(d, b"no marker here" * 10, 64)
        assert r.code == Code.CHANGED, r
        states = []
        while not states or states[-1] != b"0":
            n = await asyncio.to_thread(raw.receive)
            if n.token == b"\x01\x02":
                states.append(n.payload)
        assert states == [b"1", b"0"], states
        # cancel /5/0/3 with GET Observe 1 on its token
        raw.send(code=Code.GET, token=b"\x01\x02", uri_path=("5", "0", "3"), observe=1)
        while True:
            m = await asyncio.to_thread(raw.receive)
            if m.token == b"\x01\x02" and m.opt.observe is None:
                break
        await d.wait("/5/0/3 cancelled", lambda s: s["observations"].get("/5/0/3") == 0)
        # cancel /5/0/5 with RST to its next notification
        r = await server.request(d, Code.PUT, "/5/0/0", b"\x00", content_format=42)
        assert r.code == Code.CHANGED, r
        n = await asyncio.to_thread(raw.receive, False, True)
        assert n.token == b"\x09" and n.payload == b"0", n
        await d.wait("/5/0/5 cancelled by RST", lambda s: s["observations"].get("/5/0/5") == 0)
        assert d.status()["resets"] == ["null-byte"], d.status()
        # an instance observation notifies when one of its resources changes, in its format
        raw.send(code=Code.GET, token=b"\x05", uri_path=("5", "0"), observe=0)
        first = await asyncio.to_thread(raw.receive)
        assert int(first.opt.content_format) == 11542, first
        await server.request(d, Code.PUT, "/5/0/1", b"coap://127.0.0.1:9/nothing", content_format=0)
        n = await asyncio.to_thread(raw.receive)
        top = {ident: value for _k, ident, value in dev.tlv_decode(n.payload)}
        assert n.token == b"\x05" and top[1] == b"coap://127.0.0.1:9/nothing" and top[3] == b"\x01", top
        await d.wait("/5/0 observed", lambda s: s["observations"].get("/5/0") == 1)
    finally:
        d.close()


async def check_push_update(server):
    new = image("2.0", 20000, seed=2)
    d = await registered(server, "--version-suffix=-build7")
    try:
        r = await server.push_blocks(d, new, 512)
        assert r.code == Code.CHANGED and r.opt.block1.block_number == 39 and not r.opt.block1.more, r
        s = await d.wait("Downloaded", lambda s: s["state"] == 2)
        assert s["package_sha256"] == hashlib.sha256(new).hexdigest() and s["blocks_received"] == 40, s
        assert s["stored_bytes"] == len(new), s
        r = await server.request(d, Code.GET, "/5/0/7")
        assert r.payload == b"2.0", r
        r = await server.request(d, Code.POST, "/5/0/2")
        assert r.code == Code.CHANGED, r
        s = await d.wait("registered again after the update", lambda s: s["registrations"] == 2 and s["registered"])
        assert s["version"] == "2.0-build7" and s["state"] == 0 and s["result"] == 1 and s["updates_executed"] == 1, s
        assert s["firmware_sha256"] == hashlib.sha256(new).hexdigest(), s
        r = await server.request(d, Code.GET, "/3/0/3")
        assert r.payload == b"2.0-build7", r
        assert server.registers[-1][0]["ep"] == d.endpoint
        r = await server.request(d, Code.POST, "/5/0/2")
        assert r.code == Code.METHOD_NOT_ALLOWED, r
    finally:
        d.close()


async def check_verdicts(server):
    d = await registered(server, "--updater", "acme")
    try:
        for package, result in ((acme("3.1", b"x" * 3000, corrupt=True), 5), (b"FOTA\x02" + b"y" * 2000, 6),
                                (image("3.0"), 6)):
            r = await server.push_blocks(d, package, 1024)
            assert r.code == Code.CHANGED, r
            await d.wait(f"result {result}", lambda s: s["state"] == 0 and s["result"] == result)
        good = acme("3.1", b"payload" * 500)
        r = await server.request(d, Code.PUT, "/5/0/0", good, content_format=42)  # aiocoap splits it itself
        assert r.code == Code.CHANGED, r
        await d.wait("Downloaded", lambda s: s["state"] == 2)
        await server.request(d, Code.POST, "/5/0/2")
        await d.wait("3.1", lambda s: s["version"] == "3.1" and s["registered"] and s["registrations"] == 2)
        with open(os.path.join(d.dir, "firmware.bin"), "rb") as f:
            assert f.read() == b"payload" * 500
    finally:
        d.close()


async def check_raw_strict(server):
    d = await registered(server, "--raw-version-at", "0")
    try:
        img = b"FWVER:7.1\n" + image("x", 3000)[10:]
        wrapped = b"FOTA\x02\x00\x037.1" + bytes(40) + img
        r = await server.push_blocks(d, wrapped, 1024)
        assert r.code == Code.CHANGED, r
        await d.wait("result 6 for a wrapped image", lambda s: s["state"] == 0 and s["result"] == 6)
        r = await server.push_blocks(d, img, 1024)
        await d.wait("Downloaded", lambda s: s["state"] == 2)
        r = await server.request(d, Code.GET, "/5/0/7")
        assert r.payload == b"7.1", r
    finally:
        d.close()


async def check_pull(server):
    new = image("4.0", 30000, seed=4)
    server.serve(["fw", "p4"], new)
    d = await registered(server, "--delivery", "pull", "--max-block", "256")
    try:
        for uri, result in (("nonsense", 7), ("http://127.0.0.1/x", 9), (f"coap://127.0.0.1:{server.port}/fw/none", 7)):
            r = await server.request(d, Code.PUT, "/5/0/1", uri.encode(), content_format=0)
            assert r.code == Code.CHANGED, r
            await d.wait(f"result {result} for {uri}", lambda s: s["state"] == 0 and s["result"] == result)
        r = await server.request(d, Code.PUT, "/5/0/0", image("4.0")[:200], content_format=42)
        assert r.code == Code.METHOD_NOT_ALLOWED, r
        uri = f"coap://127.0.0.1:{server.port}/fw/p4"
        r = await server.request(d, Code.PUT, "/5/0/1", uri.encode(), content_format=0)
        assert r.code == Code.CHANGED, r
        s = await d.wait("Downloaded", lambda s: s["state"] == 2)
        assert s["package_sha256"] == hashlib.sha256(new).hexdigest(), s
        r = await server.request(d, Code.GET, "/5/0/1")
        assert r.payload == uri.encode(), r
        r = await server.request(d, Code.PUT, "/5/0/1", b"", content_format=0)
        assert r.code == Code.CHANGED, r
        s = await d.wait("reset", lambda s: s["state"] == 0 and s["resets"] == ["empty-uri"] and s["package_sha256"] is None)
    finally:
        d.close()


async def check_reset_modes(server):
    d = await registered(server, "--reset", "null-byte")
    e = await registered(server, "--reset", "empty-uri", "--delivery", "pull")
    f = await registered(server, "--reset", "any")
    try:
        pkg = image("2.0", 3000)
        for x in (d, f):
            await server.push_blocks(x, pkg, 1024)
            await x.wait("Downloaded", lambda s: s["state"] == 2)
        r = await server.request(d, Code.PUT, "/5/0/0", b"", content_format=42)
        assert r.code == Code.CHANGED, r
        await asyncio.sleep(0.2)
        assert d.status()["state"] == 2 and d.status()["resets"] == [], d.status()
        r = await server.request(d, Code.PUT, "/5/0/0", b"\x00", content_format=42)
        await d.wait("null-byte reset", lambda s: s["state"] == 0 and s["resets"] == ["null-byte"])
        r = await server.request(f, Code.PUT, "/5/0/0", b"", content_format=42)
        assert r.code == Code.CHANGED, r
        await f.wait("empty-write reset", lambda s: s["state"] == 0 and s["resets"] == ["empty-write"])
        for payload in (b"\x00", b"", b"abc"):
            r = await server.request(e, Code.PUT, "/5/0/0", payload, content_format=42)
            assert r.code == Code.METHOD_NOT_ALLOWED, r
        await e.wait("3 refused", lambda s: s["writes_refused"] == 3)
        r = await server.request(e, Code.PUT, "/5/0/1", b"", content_format=0)
        await e.wait("empty-uri reset", lambda s: s["resets"] == ["empty-uri"])
    finally:
        for x in (d, e, f):
            x.close()


async def check_too_large(server):
    d = await registered(server, "--max-block", "256")
    try:
        pkg = image("2.0", 4000)
        r = await server.push_blocks(d, pkg, 1024, stop_after=1)
        assert r.code == Code.REQUEST_ENTITY_TOO_LARGE and r.opt.block1.size == 256, r
        r = await server.push_blocks(d, pkg, 256)
        assert r.code == Code.CHANGED, r
        await d.wait("Downloaded", lambda s: s["state"] == 2 and s["blocks_received"] == 16)
    finally:
        d.close()


async def check_update_404(server):
    d = await registered(server, "--lifetime", "2")
    try:
        s = d.status()
        server.locations.pop(s["location"].split("/")[-1])
        await d.wait("registered anew", lambda s: s["registrations"] == 2 and s["registered"])
    finally:
        d.close()


async def restart_on_same_port(d):
    """Kills the device (a power cut) and starts it again on its port; its status once it
    registered again."""
    port = d.port
    d.kill()
    d.spawn(bind=f"127.0.0.1:{port}")
    return await d.wait("registered after restart", lambda s: s["registered"])


async def check_kill_restart_blocks(server):
    new = image("5.0", 10000, seed=5)
    d = await registered(server, "--profile", "blocks")
    try:
        r = await server.push_blocks(d, new, 512, stop_after=7)
        assert r.code == Code.CONTINUE, r
        await d.wait("7 blocks", lambda s: s["stored_bytes"] == 3584)
        s = await restart_on_same_port(d)
        assert s["state"] == 1 and s["stored_bytes"] == 3584 and s["boots"] == 2, s
        r = await server.request(d, Code.GET, "/5/0/26500")
        assert r.payload == b"3584", r
        r = await server.request(d, Code.POST, "/5/0/26501")
        assert r.code == Code.CHANGED, r
        r = await server.push_blocks(d, new, 512, start_block=9)
        assert r.code == Code.REQUEST_ENTITY_INCOMPLETE, r
        r = await server.push_blocks(d, new, 512, start_block=7)
        assert r.code == Code.CHANGED, r
        s = await d.wait("Downloaded", lambda s: s["state"] == 2)
        assert s["package_sha256"] == hashlib.sha256(new).hexdigest() and s["blocks_received"] == 20, s
    finally:
        d.close()


async def check_kill_restart_ram(server):
    d = await registered(server, "--profile", "ram")
    try:
        r = await server.push_blocks(d, image("6.0", 10000), 512, stop_after=5)
        assert r.code == Code.CONTINUE, r
        await d.wait("Downloading", lambda s: s["state"] == 1)
        s = await restart_on_same_port(d)
        assert s["state"] == 0 and s["result"] == 0 and s["stored_bytes"] == 0, s
        r = await server.request(d, Code.GET, "/5/0/26500")
        assert r.code == Code.NOT_FOUND, r
        r = await server.push_blocks(d, image("6.0", 10000), 512, start_block=5)
        assert r.code == Code.REQUEST_ENTITY_INCOMPLETE, r
        # a gap in a push under way: aiocoap's spool refuses it (answered 4.08)
        r = await server.push_blocks(d, image("6.0", 10000), 512, stop_after=2)
        assert r.code == Code.CONTINUE, r
        r = await server.push_blocks(d, image("6.0", 10000), 512, start_block=3, stop_after=1)
        assert r.code == Code.REQUEST_ENTITY_INCOMPLETE, r
        s = await d.wait("2 blocks taken since the restart", lambda s: s["blocks_received"] == 7 and s["state"] == 1)
    finally:
        d.close()


CHECKS = [check_registration, check_lwm2m_1_0, check_bad_input, check_reads, check_observe, check_push_update, check_verdicts, check_raw_strict, check_pull,
          check_reset_modes, check_too_large, check_update_404, check_kill_restart_blocks, check_kill_restart_ram]


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-k", default="")
    args = parser.parse_args()
    server = await Server().start()
    passed = failed = 0
    for check in CHECKS:
        if args.k not in check.__name__:
            continue
        started = time.monotonic()
        try:
            await asyncio.wait_for(check(server), 120)
            passed += 1
            print(f"ok   {check.__name__} ({time.monotonic() - started:.1f} s)", flush=True)
        except BaseException as e:  # noqa: BLE001 - report and go on
            failed += 1
            print(f"FAIL {check.__name__}: {e!r}", flush=True)
    await server.ctx.shutdown()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
