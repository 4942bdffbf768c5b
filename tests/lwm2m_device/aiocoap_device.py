#!/usr/bin/env python3
"""A stock-like LwM2M client for interoperability tests, built on aiocoap (PyPI, 0.4.17).

It stands in for widely used client stacks (Wakaama, Anjay, Zephyr's client): it follows the
OMA LwM2M 1.1/1.2 text and the OMA Firmware Update object (5), not the engine's habits. aiocoap
does the CoAP messaging, deduplication, the Block1 reassembly of pushed packages (profile
`ram`) and the Block2 download of pulled ones; this file adds objects 1, 3, 4 and 5.

    python3 aiocoap_device.py --server 127.0.0.1:5683 --endpoint EP --dir STATE_DIR [options]

STATE_DIR is the device's flash: state.json (version, Firmware Update state, lifetime
counters), stored.bin (the package as received; in the ram profile written only once the
whole package arrived), firmware.bin (the installed image) and status.json, rewritten
atomically on every change for tests to read. A killed and restarted process comes back as a
rebooted device: the installed version is kept; in the blocks profile a pushed partial package
and the Downloading state survive (/5/0/26500 reports the bytes); in the ram profile a partial
download is lost and the object comes back Idle with Update Result 0, as on stacks that keep
the Firmware Update state machine in RAM (Wakaama's and Zephyr's clients, Anjay without
persistence): nothing is left to report a lost connection for. A pull under way is lost in
both profiles (aiocoap downloads it into RAM).

Firmware Update: State 0 Idle, 1 Downloading, 2 Downloaded, 3 Updating; Update Result 0..9.
A Package URI the fetch gets 4.04 for ends with Update Result 7 (invalid URI, as Anjay maps
it), any other failure of the fetch with 4 (connection lost); a scheme it does not speak with 9
(coaps only with a key).

With --psk-identity and --psk-key the device speaks coaps to the server: DTLS 1.2 with that
pre-shared key over aiocoap's tinydtls transport (DTLSSocket, PyPI), as a DTLS client whose
connection the server's requests come back over; the device holds that connection while it is
registered.
The raw updater finds FWVER:<version> anywhere in the image, so an image wrapped whole in a
container still passes (the client that "stored it blindly"); --raw-version-at OFFSET makes it
a bootloader that reads the version from a fixed header field and refuses anything else with 6.

status.json: the counters (boots, registrations, updates_sent, writes_refused,
updates_executed, blocks_received) and resets count over the device's life in STATE_DIR, across
restarts; registered, location and observations (path -> active count, as aiocoap holds them)
are the current boot's. Every line on stderr is one event, prefixed with the endpoint.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import signal
import sys
import urllib.parse
import zlib

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message, error
from aiocoap.blockwise import Block1Spool, ContinueException
from aiocoap.optiontypes import BlockOption

TEXT, LINK, OPAQUE, SENML_JSON, TLV = 0, 40, 42, 110, 11542
IDLE, DOWNLOADING, DOWNLOADED, UPDATING = 0, 1, 2, 3
(R_INITIAL, R_SUCCESS, R_NO_FLASH, R_NO_RAM, R_CONNECTION_LOST, R_INTEGRITY, R_UNSUPPORTED,
 R_INVALID_URI, R_FAILED, R_PROTOCOL) = range(10)
PACKAGE, URI, UPDATE = (5, 0, 0), (5, 0, 1), (5, 0, 2)
TRANSFERRED, SWITCH = (5, 0, 26500), (5, 0, 26501)
COUNTERS = ("boots", "registrations", "updates_sent", "writes_refused", "updates_executed",
            "blocks_received")


def log(endpoint, message):
    print(f"[{endpoint}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Content formats (OMA TLV, SenML JSON, text/plain), written from the specifications.

def tlv_entry(kind, ident, value):
    """One TLV: kind 0 object instance, 1 resource instance, 2 multiple resource, 3 resource."""
    head = kind << 6
    if ident < 256:
        ident_bytes = bytes([ident])
    else:
        head |= 0x20
        ident_bytes = ident.to_bytes(2, "big")
    n = len(value)
    if n < 8:
        head |= n
        length = b""
    elif n < 1 << 8:
        head |= 0x08
        length = bytes([n])
    elif n < 1 << 16:
        head |= 0x10
        length = n.to_bytes(2, "big")
    else:
        head |= 0x18
        length = n.to_bytes(3, "big")
    return bytes([head]) + ident_bytes + length + value


def tlv_value(value):
    if isinstance(value, bool):
        return bytes([1 if value else 0])
    if isinstance(value, int):
        for size in (1, 2, 4, 8):
            if -(1 << (8 * size - 1)) <= value < 1 << (8 * size - 1):
                return value.to_bytes(size, "big", signed=True)
        raise ValueError("integer out of range")
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def tlv_decode(payload):
    """[(kind, id, value bytes)] of the top level of a TLV payload; ValueError when malformed."""
    out, i = [], 0
    while i < len(payload):
        head = payload[i]
        i += 1
        id_len = 2 if head & 0x20 else 1
        ident = int.from_bytes(payload[i:i + id_len], "big")
        i += id_len
        length_type = (head >> 3) & 3
        if length_type == 0:
            n = head & 7
        else:
            n = int.from_bytes(payload[i:i + length_type], "big")
            i += length_type
        if i + n > len(payload):
            raise ValueError("TLV cut short")
        out.append((head >> 6, ident, payload[i:i + n]))
        i += n
    return out


def senml_record(name, value):
    record = {"n": name}
    if isinstance(value, bool):
        record["vb"] = value
    elif isinstance(value, int):
        record["v"] = value
    elif isinstance(value, bytes):
        record["vd"] = base64.urlsafe_b64encode(value).rstrip(b"=").decode()
    else:
        record["vs"] = str(value)
    return record


def text_value(value):
    if isinstance(value, bool):
        return b"1" if value else b"0"
    if isinstance(value, bytes):
        return base64.b64encode(value)
    return str(value).encode()


# ---------------------------------------------------------------------------------------------
# Updaters: how the "MCU" reads a downloaded package. Each returns (result, version, image).

def raw_updater(package, version_at=None):
    """The package is the image; its version follows the bytes FWVER: up to 0x00 or newline,
    anywhere in the image, or exactly at `version_at` (a bootloader reading a header field)."""
    at = package.find(b"FWVER:")
    if version_at is not None:
        at = version_at if package[version_at:version_at + 6] == b"FWVER:" else -1
    if at < 0:
        return R_UNSUPPORTED, None, None
    rest = package[at + 6:at + 6 + 64]
    end = min([i for i in (rest.find(b"\x00"), rest.find(b"\n")) if i >= 0], default=len(rest))
    version = rest[:end].decode("utf-8", "replace").strip("\r")
    if not version:
        return R_UNSUPPORTED, None, None
    return R_SUCCESS, version, package


def acme_updater(package):
    """ACME · version length (1) · to-version · payload length (u32 BE) · payload · CRC32 (BE)."""
    if len(package) < 4 or package[:4] != b"ACME":
        return R_UNSUPPORTED, None, None
    if len(package) < 5:
        return R_INTEGRITY, None, None
    vlen = package[4]
    at = 5 + vlen
    if len(package) < at + 4:
        return R_INTEGRITY, None, None
    plen = int.from_bytes(package[at:at + 4], "big")
    end = at + 4 + plen
    if len(package) != end + 4:
        return R_INTEGRITY, None, None
    if zlib.crc32(package[:end]) != int.from_bytes(package[end:end + 4], "big"):
        return R_INTEGRITY, None, None
    try:
        version = package[5:at].decode("utf-8")
    except UnicodeDecodeError:
        return R_UNSUPPORTED, None, None
    if not version:
        return R_UNSUPPORTED, None, None
    return R_SUCCESS, version, package[at + 4:end]


UPDATERS = {"raw": raw_updater, "acme": acme_updater}


# ---------------------------------------------------------------------------------------------
# Resources: one aiocoap ObservableResource per LwM2M path, all backed by the Device.

class Node(resource.ObservableResource):
    def __init__(self, device, path, generation):
        super().__init__()
        self.device, self.path, self.generation = device, path, generation

    def update_observation_count(self, newcount):
        self.device.observations_changed(self)

    async def render_to_pipe(self, pipe):
        request = pipe.request
        if self.path == PACKAGE and request.code == Code.PUT:
            # Per block: the profile decides how blocks are kept (aiocoap's Block1Spool in RAM,
            # or each block to flash), so this path bypasses the generic reassembly.
            response = await self.device.guarded(self.device.package_write, request)
            pipe.add_response(response, is_last=True)
            return
        return await super().render_to_pipe(pipe)

    async def render_get(self, request):
        return await self.device.guarded(self.device.read, self.path, request)

    async def render_put(self, request):
        return await self.device.guarded(self.device.write, self.path, request)

    async def render_post(self, request):
        return await self.device.guarded(self.device.execute, self.path, request)


def reply(code, payload=b"", **options):
    return Message(code=code, payload=payload, **options)


class Device:
    def __init__(self, args):
        self.args = args
        self.ep = args.endpoint
        self.scheme = "coaps" if args.psk_identity else "coap"
        self.dir = args.dir
        os.makedirs(self.dir, exist_ok=True)
        self.updater = UPDATERS[args.updater]
        if args.updater == "raw":
            self.updater = lambda package: raw_updater(package, args.raw_version_at)
        self.blocks = args.profile == "blocks"
        self.max_szx = max(0, min(6, args.max_block.bit_length() - 5))
        host, _, port = args.bind.rpartition(":")
        self.bind = (host.strip("[]") or "127.0.0.1", int(port or 0))
        self.port = None
        self.generation = 0
        self.nodes = {}
        self.ctx = None
        self.registered = False
        self.location = None
        self.resets = []
        self.last_error = None
        self.fetch_task = None
        self.reboot_event = asyncio.Event()
        self.update_now = asyncio.Event()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.stored = 0
        self.firmware_sha = None
        self.sha = None  # running sha256 of stored.bin while blocks arrive in order

    # --- flash -----------------------------------------------------------------------------

    def path(self, name):
        return os.path.join(self.dir, name)

    def write_atomically(self, name, data):
        tmp = self.path(name + ".tmp")
        # No fsync: a killed process loses nothing the kernel holds; only rename must be atomic.
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path(name))

    def read_file(self, name):
        try:
            with open(self.path(name), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def discard_package(self):
        try:
            os.remove(self.path("stored.bin"))
        except FileNotFoundError:
            pass
        self.stored, self.sha = 0, None

    def load(self):
        """Comes up as after a power cycle, from what the flash holds."""
        saved = {}
        raw = self.read_file("state.json")
        if raw:
            try:
                saved = json.loads(raw)
            except ValueError:
                self.event("state.json unreadable: starting as a new device")
        self.version = saved.get("version", self.args.version)
        self.state = saved.get("state", IDLE)
        self.result = saved.get("result", R_INITIAL)
        self.via = saved.get("via")
        self.uri = saved.get("uri", "")
        self.pkg_version = saved.get("pkg_version", "")
        for name in COUNTERS:
            self.counters[name] = int(saved.get("counters", {}).get(name, 0))
        self.resets = list(saved.get("resets", []))
        self.counters["boots"] += 1
        self.registered, self.location, self.server_link = False, None, None
        firmware = self.read_file("firmware.bin")
        self.firmware_sha = None if firmware is None else hashlib.sha256(firmware).hexdigest()
        package = self.read_file("stored.bin")
        self.stored = 0
        self.sha = None if package is None else hashlib.sha256(package)
        if self.state == DOWNLOADING:
            if self.blocks and self.via == "push" and package is not None:
                self.stored = len(package)
                self.event(f"boot: push kept in flash, {self.stored} bytes stored")
            else:
                self.event("boot: the download under way was lost (RAM, or nothing stored yet)")
                self.set_fu(IDLE, R_INITIAL, save=False)
                self.uri = ""
        elif self.state == DOWNLOADED and package is None:
            self.set_fu(IDLE, R_INITIAL, save=False)
        elif self.state == UPDATING:
            self.event("boot: the install was cut: the bootloader finishes it")
            self.install(package)
        if self.state == DOWNLOADED:
            self.stored = len(package)
        self.save()

    def save(self):
        state = {
            "version": self.version, "state": self.state, "result": self.result,
            "via": self.via, "uri": self.uri, "pkg_version": self.pkg_version,
            "counters": self.counters, "resets": self.resets,
        }
        self.write_atomically("state.json", json.dumps(state).encode())
        self.write_status()

    def write_status(self):
        package_sha = None if self.sha is None else self.sha.hexdigest()
        observations = {}
        for node in self.nodes.values():
            count = len(node._observations)
            if count or node.observed_once:
                observations["/" + "/".join(map(str, node.path))] = count
        status = {
            "pid": os.getpid(), "endpoint": self.ep, "port": self.port,
            "profile": self.args.profile, "registered": self.registered,
            "location": self.location, "state": self.state, "result": self.result,
            "version": self.version, "stored_bytes": self.transferred(),
            "package_sha256": package_sha,
            "firmware_sha256": self.firmware_sha,
            "observations": observations, "resets": self.resets, "uri": self.uri,
            "last_error": self.last_error, **self.counters,
        }
        self.write_atomically("status.json", json.dumps(status, indent=1).encode())

    def event(self, message, error_=False):
        log(self.ep, message)
        if error_:
            self.last_error = message

    def count(self, name):
        self.counters[name] += 1

    def transferred(self):
        return self.stored if self.state in (DOWNLOADING, DOWNLOADED, UPDATING) else 0

    # --- Firmware Update state machine -----------------------------------------------------

    def set_fu(self, state, result, save=True):
        changed = []
        if state != self.state:
            changed.append((5, 0, 3))
        if result != self.result:
            changed.append((5, 0, 5))
        if state != self.state or result != self.result:
            self.event(f"firmware update: state {self.state}->{state}, result {self.result}->{result}")
        self.state, self.result = state, result
        if save:
            self.save()
        for path in changed + [TRANSFERRED]:
            self.notify(path)

    def reset(self, how):
        self.event(f"reset to Idle by {how} (state was {self.state}, result {self.result})")
        if self.fetch_task is not None:
            self.fetch_task.cancel()
            self.fetch_task = None
        self.resets.append(how)
        self.discard_package()
        self.via, self.pkg_version = None, ""
        if self.uri:
            self.uri = ""
            self.notify(URI)
        self.set_fu(IDLE, R_INITIAL)

    def begin_download(self, via):
        if self.fetch_task is not None:
            self.fetch_task.cancel()
            self.fetch_task = None
        self.discard_package()
        self.via, self.pkg_version = via, ""
        self.set_fu(DOWNLOADING, R_INITIAL)

    def verify(self, package):
        """The whole package is in flash: the updater checks it."""
        result, version, _ = self.updater(package)
        if result != R_SUCCESS:
            self.event(f"verification failed: result {result} ({len(package)} bytes, "
                       f"sha256 {hashlib.sha256(package).hexdigest()[:16]})", error_=True)
            self.set_fu(IDLE, result)
            return
        self.pkg_version = version
        self.notify((5, 0, 7))
        self.stored = len(package)
        self.event(f"package verified: version {version}, {len(package)} bytes")
        self.set_fu(DOWNLOADED, R_INITIAL)

    def install(self, package):
        """Writes the image the updater extracts; returns whether it installed."""
        result, version, image = self.updater(package) if package is not None else (R_FAILED, None, None)
        if result != R_SUCCESS:
            self.event("install failed: the stored package does not verify", error_=True)
            self.set_fu(IDLE, R_FAILED, save=False)
            return False
        self.write_atomically("firmware.bin", image)
        self.firmware_sha = hashlib.sha256(image).hexdigest()
        self.version = version + self.args.version_suffix
        self.uri, self.via = "", None
        self.set_fu(IDLE, R_SUCCESS, save=False)
        self.event(f"installed version {self.version} ({len(image)} bytes)")
        return True

    async def run_update(self):
        try:
            await asyncio.sleep(self.args.install_seconds)
            if self.install(self.read_file("stored.bin")):
                self.save()
                self.event("rebooting into the new firmware")
                self.reboot_event.set()
            else:
                self.save()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never crash: report it
            self.event(f"install raised {e!r}", error_=True)

    # --- reads -----------------------------------------------------------------------------

    def definitions(self):
        """{(object, resource): (operations, value or list of values for multi-instance)}."""
        a = self.args
        d = {
            (1, 0): ("R", 1), (1, 1): ("R", a.lifetime), (1, 6): ("R", False), (1, 7): ("R", "U"),
            (1, 8): ("E", None),
            (3, 0): ("R", a.manufacturer), (3, 1): ("R", a.model), (3, 2): ("R", self.ep),
            (3, 3): ("R", self.version), (3, 4): ("E", None), (3, 6): ("R", list(a.power_source)),
            (3, 9): ("R", a.battery), (3, 10): ("R", a.memory_free), (3, 11): ("R", [0]),
            (3, 16): ("R", "U"),
            (4, 0): ("R", 7), (4, 1): ("R", [7]), (4, 2): ("R", a.signal), (4, 8): ("R", a.cell),
            (5, 0): ("W", None), (5, 1): ("RW", self.uri), (5, 2): ("E", None),
            (5, 3): ("R", self.state), (5, 5): ("R", self.result), (5, 6): ("R", ""),
            (5, 7): ("R", self.pkg_version), (5, 8): ("R", [0]),
            (5, 9): ("R", {"pull": 0, "push": 1, "both": 2}[a.delivery]),
        }
        if self.blocks:
            d[(5, 26500)] = ("R", self.transferred())
            d[(5, 26501)] = ("E", None)
        return d

    def readable(self, obj):
        return [(r, v) for (o, r), (ops, v) in sorted(self.definitions().items())
                if o == obj and "R" in ops]

    def read(self, path, request):
        accept = None if request.opt.accept is None else int(request.opt.accept)
        if accept == SENML_JSON and self.args.lwm2m == "1.0":
            return reply(Code.NOT_ACCEPTABLE)  # SenML came with LwM2M 1.1
        defs = self.definitions()
        if len(path) >= 3:
            ops, value = defs[(path[0], path[2])]
            if "R" not in ops:
                return reply(Code.METHOD_NOT_ALLOWED)
            if len(path) == 4:
                value, multi = value[path[3]], False
            else:
                multi = isinstance(value, list)
            fmt = accept if accept is not None else (TLV if multi else TEXT)
            if fmt == TEXT and not multi:
                return reply(Code.CONTENT, text_value(value), content_format=TEXT)
            if fmt == TLV:
                if len(path) == 4:
                    body = tlv_entry(1, path[3], tlv_value(value))
                elif multi:
                    body = tlv_entry(2, path[2], b"".join(
                        tlv_entry(1, i, tlv_value(v)) for i, v in enumerate(value)))
                else:
                    body = tlv_entry(3, path[2], tlv_value(value))
                return reply(Code.CONTENT, body, content_format=TLV)
            if fmt == SENML_JSON:
                base = "/" + "/".join(map(str, path))
                if multi:
                    records = [senml_record(str(i), v) for i, v in enumerate(value)]
                    records[0]["bn"] = base + "/"
                else:
                    records = [senml_record("", value)]
                    del records[0]["n"]
                    records[0]["bn"] = base
                return reply(Code.CONTENT, json.dumps(records).encode(), content_format=SENML_JSON)
            return reply(Code.NOT_ACCEPTABLE)
        fmt = accept if accept is not None else TLV
        resources = self.readable(path[0])
        if fmt == TLV:
            def instance_body():
                out = b""
                for r, v in resources:
                    if isinstance(v, list):
                        out += tlv_entry(2, r, b"".join(
                            tlv_entry(1, i, tlv_value(x)) for i, x in enumerate(v)))
                    else:
                        out += tlv_entry(3, r, tlv_value(v))
                return out
            body = instance_body() if len(path) == 2 else tlv_entry(0, 0, instance_body())
            return reply(Code.CONTENT, body, content_format=TLV)
        if fmt == SENML_JSON:
            prefix = "" if len(path) == 2 else "0/"
            records = []
            for r, v in resources:
                if isinstance(v, list):
                    records += [senml_record(f"{prefix}{r}/{i}", x) for i, x in enumerate(v)]
                else:
                    records.append(senml_record(f"{prefix}{r}", v))
            records[0]["bn"] = "/" + "/".join(map(str, path)) + "/"
            return reply(Code.CONTENT, json.dumps(records).encode(), content_format=SENML_JSON)
        return reply(Code.NOT_ACCEPTABLE)

    # --- writes ----------------------------------------------------------------------------

    def refuse(self, why, code=Code.METHOD_NOT_ALLOWED):
        self.count("writes_refused")
        self.event(f"write refused ({code}): {why}")
        self.save()
        return reply(code)

    async def write(self, path, request):
        if request.opt.uri_query and not request.payload:
            self.event(f"Write-Attributes {'&'.join(request.opt.uri_query)} on {path}: accepted, not acted upon")
            return reply(Code.CHANGED)
        if path != URI:
            return self.refuse("/" + "/".join(map(str, path)) + " is not writable")
        try:
            uri = self.decode_string(request, path)
        except ValueError as e:
            return self.refuse(f"Package URI: {e}", Code.BAD_REQUEST)
        if uri is None:
            return self.refuse("Package URI: unsupported content format", Code.UNSUPPORTED_CONTENT_FORMAT)
        if uri == "":
            if self.state == UPDATING:
                return self.refuse("reset while Updating")
            self.reset("empty-uri")
            return reply(Code.CHANGED)
        if self.args.delivery == "push":
            return self.refuse("a Package URI on a push-only device")
        if self.state != IDLE:
            return self.refuse(f"a Package URI in state {self.state}")
        self.event(f"Package URI written: {uri}")
        self.uri = uri
        self.notify(URI)
        parsed = None
        try:
            parsed = urllib.parse.urlsplit(uri)
            _ = parsed.port
        except ValueError:
            parsed = None
        if parsed is None or not parsed.scheme or not parsed.hostname or parsed.fragment:
            self.event(f"invalid URI {uri!r}", error_=True)
            self.set_fu(IDLE, R_INVALID_URI)
            return reply(Code.CHANGED)
        if parsed.scheme.lower() != self.scheme:
            self.event(f"unsupported protocol {parsed.scheme!r}", error_=True)
            self.set_fu(IDLE, R_PROTOCOL)
            return reply(Code.CHANGED)
        self.begin_download("pull")
        self.fetch_task = asyncio.create_task(self.fetch(uri))
        return reply(Code.CHANGED)

    def decode_string(self, request, path):
        """The string value of a single-resource write; None for a format not supported."""
        cf = None if request.opt.content_format is None else int(request.opt.content_format)
        if cf in (None, TEXT):
            return request.payload.decode("utf-8")
        if cf == TLV:
            entries = tlv_decode(request.payload)
            if not entries:
                return ""
            for kind, ident, value in entries:
                if kind == 3 and ident == path[2]:
                    return value.decode("utf-8")
            raise ValueError("no TLV for the resource")
        if cf == SENML_JSON:
            records = json.loads(request.payload)
            for record in records:
                name = record.get("bn", "") + record.get("n", "")
                if name.rstrip("/") == "/" + "/".join(map(str, path)):
                    return str(record.get("vs", ""))
            raise ValueError("no SenML record for the resource")
        return None

    async def package_write(self, request):
        block1 = request.opt.block1
        payload = request.payload
        cf = request.opt.content_format
        if self.args.reset == "empty-uri":
            return self.refuse(f"pull-only style: every write to /5/0/0 ({len(payload)} bytes)")
        if cf is not None and int(cf) != OPAQUE:
            return self.refuse(f"package in content format {int(cf)}", Code.UNSUPPORTED_CONTENT_FORMAT)
        single = block1 is None or (block1.block_number == 0 and not block1.more)
        echo = {} if block1 is None else {"block1": block1}
        if single and payload == b"\x00":
            if self.state == UPDATING:
                return self.refuse("reset while Updating")
            self.reset("null-byte")
            return reply(Code.CHANGED, **echo)
        if single and payload == b"":
            if self.args.reset == "any":
                if self.state == UPDATING:
                    return self.refuse("reset while Updating")
                self.reset("empty-write")
            else:
                self.event("zero-length write to /5/0/0: not a reset here, state kept")
            return reply(Code.CHANGED, **echo)
        if self.args.delivery == "pull":
            return self.refuse("a package write on a pull-only device")
        size = len(payload) if block1 is None else block1.size
        if size > 16 << self.max_szx:
            self.event(f"package block of {size} bytes over {16 << self.max_szx}: 4.13")
            return reply(Code.REQUEST_ENTITY_TOO_LARGE,
                         block1=BlockOption.BlockwiseTuple(0, False, self.max_szx))
        first = block1 is None or block1.block_number == 0
        if first:
            if self.state in (DOWNLOADED, UPDATING) or (self.state == DOWNLOADING and self.via == "pull"):
                return self.refuse(f"a package write in state {self.state}")
            self.begin_download("push")
        elif self.state != DOWNLOADING or self.via != "push":
            self.event(f"block {block1.block_number} while not downloading a push: 4.08")
            return reply(Code.REQUEST_ENTITY_INCOMPLETE)
        if self.blocks:
            return self.block_to_flash(request, payload, block1, echo)
        try:
            whole = self.spool.feed_and_take(request)
        except ContinueException:
            self.took_block(block1)
            return reply(Code.CONTINUE, block1=block1)
        except ValueError:
            # aiocoap's spool raises ValueError for a gap or overlap (it would answer 5.00).
            self.event(f"block {block1.block_number} does not continue the package: 4.08")
            return reply(Code.REQUEST_ENTITY_INCOMPLETE)
        self.took_block(block1)
        package = whole.payload
        self.write_atomically("stored.bin", package)
        self.stored, self.sha = len(package), hashlib.sha256(package)
        self.event(f"package received whole: {len(package)} bytes")
        asyncio.get_running_loop().call_soon(self.verify_stored)
        return reply(Code.CHANGED, **echo)

    def took_block(self, block1):
        if block1 is None:
            self.event("package written in one request")
        else:
            self.event(f"block {block1.block_number} ({block1.size} bytes, more={int(block1.more)}) taken")
        self.count("blocks_received")
        self.save()
        self.notify(TRANSFERRED)

    def block_to_flash(self, request, payload, block1, echo):
        start = 0 if block1 is None else block1.start
        if block1 is not None and block1.more and len(payload) != block1.size:
            return reply(Code.BAD_REQUEST, b"payload size does not match Block1")
        if start > self.stored:
            self.event(f"block {block1.block_number} at {start} past the {self.stored} bytes stored: 4.08")
            return reply(Code.REQUEST_ENTITY_INCOMPLETE)
        mode = "r+b" if os.path.exists(self.path("stored.bin")) else "wb"
        with open(self.path("stored.bin"), mode) as f:
            f.seek(start)
            f.write(payload)
            f.truncate(start + len(payload))
        if start == self.stored and self.sha is not None:
            self.sha.update(payload)
        else:
            self.sha = hashlib.sha256(self.read_file("stored.bin"))
        self.stored = start + len(payload)
        self.took_block(block1)
        if block1 is not None and block1.more:
            return reply(Code.CONTINUE, block1=block1)
        self.event(f"package received: {self.stored} bytes")
        asyncio.get_running_loop().call_soon(self.verify_stored)
        return reply(Code.CHANGED, **echo)

    def verify_stored(self):
        if self.state == DOWNLOADING:
            self.verify(self.read_file("stored.bin") or b"")

    async def fetch(self, uri):
        try:
            request = Message(code=Code.GET, uri=uri)
            if self.max_szx < 6:
                request.opt.block2 = BlockOption.BlockwiseTuple(0, False, self.max_szx)
            response = await asyncio.wait_for(self.ctx.request(request).response,
                                              self.args.fetch_timeout)
        except asyncio.CancelledError:
            self.event("download cancelled")
            raise
        except Exception as e:
            self.fetch_task = None
            self.event(f"download from {uri} failed: {e!r}", error_=True)
            self.set_fu(IDLE, R_CONNECTION_LOST)
            return
        self.fetch_task = None
        if self.state != DOWNLOADING or self.via != "pull":
            return
        if not response.code.is_successful():
            self.event(f"download from {uri} answered {response.code}", error_=True)
            self.set_fu(IDLE, R_INVALID_URI if response.code == Code.NOT_FOUND else R_CONNECTION_LOST)
            return
        package = response.payload
        self.write_atomically("stored.bin", package)
        self.stored, self.sha = len(package), hashlib.sha256(package)
        self.event(f"downloaded {len(package)} bytes from {uri}")
        self.verify(package)

    # --- executes --------------------------------------------------------------------------

    async def execute(self, path, request):
        ops = self.definitions().get((path[0], path[2]), ("", None))[0] if len(path) == 3 else ""
        if "E" not in ops:
            return reply(Code.METHOD_NOT_ALLOWED)
        if path == UPDATE:
            if self.state != DOWNLOADED:
                self.event(f"Update executed in state {self.state}: 4.05")
                return reply(Code.METHOD_NOT_ALLOWED)
            self.count("updates_executed")
            self.event("Update executed: installing")
            self.set_fu(UPDATING, R_INITIAL)
            asyncio.create_task(self.run_update())
            return reply(Code.CHANGED)
        if path == SWITCH:
            if self.state not in (IDLE, DOWNLOADING) or self.via == "pull":
                return reply(Code.METHOD_NOT_ALLOWED)
            self.event(f"Switch to Download: going on from byte {self.stored}")
            self.via = "push"
            if self.state == IDLE:
                self.discard_package()
            self.set_fu(DOWNLOADING, R_INITIAL)
            return reply(Code.CHANGED)
        if path == (3, 0, 4):
            self.event("Reboot executed")
            asyncio.get_running_loop().call_later(0.2, self.reboot_event.set)
            return reply(Code.CHANGED)
        if path == (1, 0, 8):
            self.update_now.set()
            return reply(Code.CHANGED)
        return reply(Code.METHOD_NOT_ALLOWED)

    async def guarded(self, handler, *args):
        """Runs a handler; whatever it raises is answered 5.00 and kept as last_error."""
        request = args[-1]
        where = "/" + "/".join(str(p) for p in (args[0] if len(args) == 2 else PACKAGE))
        try:
            if asyncio.iscoroutinefunction(handler):
                response = await handler(*args)
            else:
                response = handler(*args)
        except error.RenderableError:
            raise
        except Exception as e:
            self.event(f"{request.code} {where} raised {e!r}: 5.00", error_=True)
            self.write_status()
            return reply(Code.INTERNAL_SERVER_ERROR)
        if handler != self.package_write:  # package blocks are logged one line each already
            accept, cf = request.opt.accept, request.opt.content_format
            details = "".join(f" {name}={value}" for name, value in (
                ("observe", request.opt.observe), ("accept", None if accept is None else int(accept)),
                ("ct", None if cf is None else int(cf)), ("query", "&".join(request.opt.uri_query) or None))
                if value is not None)
            sent = f" ct={int(response.opt.content_format)}" if response.opt.content_format is not None else ""
            # aiocoap renders every notification of an observation with the request that made it
            what = "notification of" if getattr(request, "_rendered", False) else f"{request.code}"
            request._rendered = True
            self.event(f"{what} {where}{details} {len(request.payload)} B -> "
                       f"{response.code}{sent} {len(response.payload)} B")
        return response

    # --- observations ----------------------------------------------------------------------

    def observations_changed(self, node):
        if node.generation != self.generation:
            return  # a node of a site gone with a reboot
        node.observed_once = True
        count = len(node._observations)
        self.event(f"observations of /{'/'.join(map(str, node.path))}: {count}")
        self.write_status()

    def notify(self, path):
        for prefix in (path, path[:2], path[:1]):
            node = self.nodes.get(prefix)
            if node is not None:
                node.updated_state()

    # --- CoAP endpoint and registration ----------------------------------------------------

    def build_site(self):
        self.generation += 1
        self.nodes = {}
        site = resource.Site()
        defs = self.definitions()
        paths = set()
        for (obj, res), (_ops, value) in defs.items():
            paths |= {(obj,), (obj, 0), (obj, 0, res)}
            if isinstance(value, list):
                paths |= {(obj, 0, res, i) for i in range(len(value))}
        for path in sorted(paths):
            node = Node(self, path, self.generation)
            node.observed_once = False
            self.nodes[path] = node
            site.add_resource([str(p) for p in path], node)
        return site

    def links(self):
        version = self.args.lwm2m
        root = '</>;rt="oma.lwm2m"' + (";ct=110" if version != "1.0" else "")
        five = "</5>;ver=1.0,</5/0>" if version != "1.0" else "</5/0>"
        return f"{root},</1/0>,</3/0>,</4/0>,{five}"

    def server_request(self, code, path, query=(), payload=b"", **options):
        message = Message(code=code, uri=f"{self.scheme}://{self.args.server}", payload=payload,
                          **options)
        message.opt.uri_path = list(path)
        message.opt.uri_query = list(query)
        return message

    def hold_link(self, response):
        """Keeps the link the server answered over for as long as the device is registered.
        aiocoap keeps a tinydtls connection only while something refers to it and closes it
        (close_notify) when the garbage collector finds it unused, after which the server's
        requests would have nowhere to go: a device holds its DTLS session."""
        self.server_link = response.remote

    async def register(self):
        query = [f"ep={self.ep}", f"lt={self.args.lifetime}", f"lwm2m={self.args.lwm2m}", "b=U"]
        request = self.server_request(Code.POST, ["rd"], query, self.links().encode(),
                                      content_format=LINK)
        response = await self.ctx.request(request).response
        if response.code != Code.CREATED:
            raise RuntimeError(f"Register answered {response.code}")
        self.hold_link(response)
        self.location = "/" + "/".join(response.opt.location_path)
        self.registered = True
        self.count("registrations")
        self.event(f"registered at {self.location} (lwm2m {self.args.lwm2m}, lt {self.args.lifetime})")
        self.save()

    async def registration_loop(self):
        backoff = 1.0
        while True:
            try:
                await self.register()
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.event(f"Register failed: {e!r}; again in {backoff:.0f} s", error_=True)
                self.write_status()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            while True:
                try:
                    await asyncio.wait_for(self.update_now.wait(), max(1.0, self.args.lifetime / 2))
                except asyncio.TimeoutError:
                    pass
                self.update_now.clear()
                path = self.location.strip("/").split("/")
                try:
                    response = await self.ctx.request(self.server_request(Code.POST, path)).response
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self.event(f"Update got no answer ({e!r}): registering anew", error_=True)
                    break
                if response.code == Code.CHANGED:
                    self.hold_link(response)
                    self.count("updates_sent")
                    self.write_status()
                    continue
                self.event(f"Update answered {response.code}: registering anew")
                break
            self.registered, self.location, self.server_link = False, None, None
            self.write_status()

    async def run(self):
        while True:
            self.load()
            site = self.build_site()
            self.spool = Block1Spool()  # RAM: gone with every reboot
            transports = ["udp6", "tinydtls"] if self.scheme == "coaps" else ["udp6"]
            self.ctx = await aiocoap.Context.create_server_context(
                site, bind=(self.bind[0], self.port or self.bind[1]), transports=transports)
            if self.scheme == "coaps":
                self.ctx.client_credentials.load_from_dict({f"coaps://{self.args.server}/*": {
                    "dtls": {"psk": self.args.psk_key.encode(),
                             "client-identity": self.args.psk_identity.encode()}}})
            sock = self.ctx.request_interfaces[0].token_interface.message_interface.transport
            self.port = sock.get_extra_info("socket").getsockname()[1]
            self.event(f"up: version {self.version}, state {self.state}, result {self.result}, "
                       f"port {self.port}, profile {self.args.profile}")
            self.write_status()
            self.reboot_event.clear()
            registration = asyncio.create_task(self.registration_loop())
            await self.reboot_event.wait()
            registration.cancel()
            if self.fetch_task is not None:
                self.fetch_task.cancel()
                self.fetch_task = None
            old = self.ctx
            self.generation += 1  # late cancellation callbacks of old nodes are ignored
            await old.shutdown()
            self.nodes = {}
            self.event("rebooting")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", required=True, help="HOST:PORT of the LwM2M server")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--dir", required=True, help="the device's flash")
    p.add_argument("--bind", default="127.0.0.1:0")
    p.add_argument("--profile", choices=["ram", "blocks"], default="ram")
    p.add_argument("--reset", choices=["null-byte", "empty-uri", "any"], default="null-byte")
    p.add_argument("--delivery", choices=["push", "pull", "both"], default="both")
    p.add_argument("--lwm2m", choices=["1.0", "1.1", "1.2"], default="1.1")
    p.add_argument("--manufacturer", default="acme")
    p.add_argument("--model", default="NB-S")
    p.add_argument("--version", default="1.0")
    p.add_argument("--version-suffix", default="")
    p.add_argument("--battery", type=int, default=100)
    p.add_argument("--power-source", type=int, nargs="+", default=[1])
    p.add_argument("--memory-free", type=int, default=64, help="KiB of free RAM")
    p.add_argument("--signal", type=int, default=-90, help="dBm")
    p.add_argument("--cell", type=int, default=1)
    p.add_argument("--lifetime", type=int, default=300)
    p.add_argument("--updater", choices=sorted(UPDATERS), default="raw")
    p.add_argument("--raw-version-at", type=int, default=None, metavar="OFFSET",
                   help="raw updater: FWVER: must sit at this offset (default: anywhere)")
    p.add_argument("--max-block", type=int, default=1024)
    p.add_argument("--psk-identity", help="DTLS PSK identity: speak coaps")
    p.add_argument("--psk-key", help="DTLS pre-shared key (as text)")
    p.add_argument("--install-seconds", type=float, default=0.5,
                   help="how long Updating lasts before the reboot")
    p.add_argument("--fetch-timeout", type=float, default=300.0,
                   help="bound on one pull download")
    args = p.parse_args(argv)
    if args.max_block not in (16, 32, 64, 128, 256, 512, 1024):
        p.error("--max-block must be a power of two from 16 to 1024")
    if args.lifetime < 1:
        p.error("--lifetime must be positive")
    return args


def main():
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"[{args.endpoint}] aiocoap %(levelname)s: %(message)s")
    device = Device(args)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    task = loop.create_task(device.run())
    task.add_done_callback(lambda t: loop.stop())
    loop.run_forever()
    if task.done() and not task.cancelled() and task.exception() is not None:
        log(args.endpoint, f"stopped by {task.exception()!r}")
        os._exit(1)
    log(args.endpoint, "stopped")
    os._exit(0)  # like a power cut: no De-register, nothing flushed but the flash


if __name__ == "__main__":
    main()
