#!/usr/bin/env node
// An LwM2M 1.0 device on lwm2m-node-lib (npm, Telefonica; CoAP by node-coap), for
// tests/lwm2m_node_interop.rs: a client whose LwM2M and CoAP nobody in this project wrote.
//
//   node client.js --host 127.0.0.1 --port 5683 --endpoint NAME --out FILE
//                  [--lifetime 300] [--version 1.0] [--next-version 2.0]
//                  [--manufacturer Acme] [--model NB-N] [--block-size 512]
//                  [--hold-ms 0] [--install-ms 200] [--reboot deregister|silent]
//                  [--max-size BYTES] [--download-from own|registration]
//                  [--log-level ERROR]
//
// It holds /3/0 (Device) and /5/0 (Firmware Update, pull only: /5/0/9 = 0), registers to
// HOST:PORT (binding U, LwM2M 1.0) and sends a registration Update every 3/4 of the lifetime.
// lwm2m-node-lib answers Read, Write and Execute (plain text only) and Observe; this program
// adds the Firmware Update state machine as OMA describes it:
//
// - a coap:// URI written to /5/0/1: State 1, the package fetched with Block2 by node-coap,
//   written to --out; after --hold-ms
//   (a device verifying what it stored) State 2. A failure: Update Result 7 (4.04 and other
//   4.xx answers, a URI that does not parse), 9 (not coap://), 4 (no answer) or 2 (more
//   than --max-size bytes: not enough flash), State 0.
// - an empty string written to /5/0/1, or a single '\0' written to /5/0/0: reset to Idle with
//   Update Result 0. Any other write to /5/0/0 (a push) is refused with 4.00: the library has
//   no Block1 reassembly (node-coap's server hands every block to the handler as if it were a
//   whole request).
// - Execute /5/0/2 in State 2: 2.04, State 3, then after --install-ms /3/0/3 becomes
//   --next-version, Update Result 1, State 0, and the device "reboots": de-registers and
//   registers anew (--reboot deregister), or just registers anew from a new port (silent).
//   In any other State: 4.05.
//
// Where the download leaves from (--download-from): `own`, node-coap's global agent, a socket
// of its own on another port, as a program using these libraries would do; or `registration`,
// the socket the client registered from (and listens on), as a module with one socket does.
// The library has no API for the latter: node-coap's Agent takes a socket, and the listener
// lwm2m-node-lib returns (deviceInformation.serverInfo.server) holds it in a private field.
//
// One JSON object per line on stdout for each event, so a test can follow it:
//   {"event":"registered","endpoint":...,"location":"rd/ID","port":LOCAL_PORT,"count":N}
//   {"event":"update","port":LOCAL_PORT}
//   {"event":"read","path":"/3/0/3","value":"1.0"}
//   {"event":"write","path":"/5/0/1","value":"coap://..."}
//   {"event":"execute","path":"/5/0/2","arguments":""}
//   {"event":"state","state":1,"result":0}
//   {"event":"downloaded","uri":...,"size":N,"sha256":HEX,"file":FILE}
//   {"event":"installed","version":"2.0"}
//   {"event":"deregistered"}
//   {"event":"error","message":...[,"result":UPDATE_RESULT]}
// The library's own log (logops) goes to stderr.

'use strict';

process.noDeprecation = true; // node-coap 0.22 uses `new Buffer`
// lwm2m-node-lib loads its server side (mongoose) too, which warns of circular requires.
process.removeAllListeners('warning');
process.on('warning', (warning) => {
    if (!/circular dependency/.test(warning.message)) {
        process.stderr.write(`${warning.name}: ${warning.message}\n`);
    }
});

const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const coap = require('coap');
const logger = require('logops');
const lwm2m = require('lwm2m-node-lib');

const client = lwm2m.client;

function parseArgs(argv) {
    const options = {
        lifetime: '300',
        version: '1.0',
        manufacturer: 'Acme',
        model: 'NB-N',
        'hold-ms': '0',
        'download-from': 'own',
        'install-ms': '200',
        reboot: 'deregister',
        'log-level': 'ERROR',
    };
    for (let i = 0; i < argv.length; i += 2) {
        if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
            usage(`unexpected argument ${argv[i]}`);
        }
        options[argv[i].slice(2)] = argv[i + 1];
    }
    for (const required of ['host', 'port', 'endpoint', 'out']) {
        if (!options[required]) {
            usage(`--${required} is required`);
        }
    }
    if (!['deregister', 'silent'].includes(options.reboot)) {
        usage('--reboot is deregister or silent');
    }
    if (!['own', 'registration'].includes(options['download-from'])) {
        usage('--download-from is own or registration');
    }
    if (!options['next-version']) {
        options['next-version'] = `${options.version}-updated`;
    }
    return options;
}

function usage(message) {
    process.stderr.write(`${message}\nusage: node client.js --host H --port P --endpoint EP --out FILE ` +
        '[--lifetime S] [--version V] [--next-version V] [--manufacturer M] [--model M] ' +
        '[--block-size B] [--hold-ms MS] [--install-ms MS] [--reboot deregister|silent] ' +
        '[--max-size BYTES] [--download-from own|registration] [--log-level L]\n');
    process.exit(2);
}

const options = parseArgs(process.argv.slice(2));

function emit(event, fields) {
    process.stdout.write(JSON.stringify(Object.assign({ event }, fields)) + '\n');
}

logger.setStream(process.stderr);
logger.setLevel(options['log-level']);

const ipProtocol = net.isIPv6(options.host) ? 'udp6' : 'udp4';
client.init({
    logLevel: options['log-level'],
    client: {
        lifetime: options.lifetime,
        version: '1.0',
        logLevel: options['log-level'],
        ipProtocol,
        serverProtocol: ipProtocol,
        formats: [{ name: 'lightweightm2m/text', value: 1541 }],
        writeFormat: 'lightweightm2m/text',
    },
});

// The registry keeps every value as given; its Read answers 4.04 for a falsy one (0, ''), so
// numbers are kept as strings.
function set(objectUri, resourceId, value) {
    client.registry.setResource(objectUri, String(resourceId), String(value), (error) => {
        if (error) {
            emit('error', { message: `setting ${objectUri}/${resourceId}: ${error.message}` });
        }
    });
}

function get(objectUri, resourceId) {
    let value;
    client.registry.get(objectUri, (error, object) => {
        value = error ? undefined : object.attributes[String(resourceId)];
    });
    return value;
}

function createObjects(done) {
    client.registry.create('/3/0', (error3) => {
        client.registry.create('/5/0', (error5) => {
            if (error3 || error5) {
                return done(error3 || error5);
            }
            const device = {
                0: options.manufacturer, // Manufacturer
                1: options.model, // Model Number
                2: `SN-${options.endpoint}`, // Serial Number
                3: options.version, // Firmware Version
                6: 6, // Available Power Sources: AC (mains); one instance (plain text only)
                7: 230000, // Power Source Voltage, mV
                9: 0, // Battery Level: 0 on mains power
                10: 256, // Memory Free, KB (RAM)
                11: 0, // Error Code
                16: 'U', // Supported Binding and Modes
            };
            const firmware = {
                1: '', // Package URI
                3: 0, // State: Idle
                5: 0, // Update Result: initial
                6: '', // PkgName
                7: '', // PkgVersion
                8: 0, // Firmware Update Protocol Support: CoAP
                9: 0, // Firmware Update Delivery Method: pull only
            };
            for (const [id, value] of Object.entries(device)) {
                set('/3/0', id, value);
            }
            for (const [id, value] of Object.entries(firmware)) {
                set('/5/0', id, value);
            }
            done(null);
        });
    });
}

// ---- The Firmware Update state machine -------------------------------------------------

const STATE = { idle: 0, downloading: 1, downloaded: 2, updating: 3 };
const RESULT = {
    initial: 0, success: 1, notEnoughFlash: 2, connectionLost: 4, invalidUri: 7, updateFailed: 8,
    unsupportedProtocol: 9,
};

let download = 0; // the number of the current download: a reset or a new URI supersedes it

function setFirmware(state, result) {
    // Update Result before State: a server that sees State change finds the result in place.
    set('/5/0', 5, result);
    set('/5/0', 3, state);
    emit('state', { state, result });
}

function state() {
    return Number(get('/5/0', 3));
}

function reset() {
    download += 1;
    setFirmware(STATE.idle, RESULT.initial);
}

function fail(result, message) {
    emit('error', { message, result });
    setFirmware(STATE.idle, result);
}

// The Block2 option value asking for block 0 of `size` bytes (RFC 7959).
function firstBlock2(size) {
    const szx = Math.log2(size) - 4;
    if (!Number.isInteger(szx) || szx < 0 || szx > 6) {
        usage('--block-size is a power of two from 16 to 1024');
    }
    return Buffer.from([szx]);
}

// node-coap agents on registration sockets, one per socket (an agent never lets go of one).
const agents = new WeakMap();

// The agent a download uses: undefined for node-coap's global one.
function downloadAgent() {
    if (options['download-from'] === 'own') {
        return undefined;
    }
    const socket = current && current.serverInfo.server._sock;
    if (!socket) {
        return undefined;
    }
    if (!agents.has(socket)) {
        agents.set(socket, new coap.Agent({ type: ipProtocol, socket }));
    }
    return agents.get(socket);
}

function startDownload(uri) {
    const mine = ++download;
    let url;
    try {
        url = new URL(uri);
    } catch (error) {
        return fail(RESULT.invalidUri, `Package URI ${JSON.stringify(uri)}: ${error.message}`);
    }
    if (url.protocol !== 'coap:') {
        return fail(RESULT.unsupportedProtocol, `Package URI ${uri}: only coap:// is supported`);
    }
    setFirmware(STATE.downloading, RESULT.initial);
    const request = coap.request({
        hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: url.port ? Number(url.port) : 5683,
        pathname: url.pathname,
        query: url.search ? url.search.slice(1) : undefined,
        method: 'GET',
        agent: downloadAgent(),
    });
    if (options['block-size']) {
        request.setOption('Block2', firstBlock2(Number(options['block-size'])));
    }
    let over = false;
    const end = (result, message) => {
        if (over || mine !== download) {
            return;
        }
        over = true;
        fail(result, message);
    };
    request.on('response', (response) => {
        if (over || mine !== download) {
            return;
        }
        if (response.code !== '2.05') {
            const result = response.code.startsWith('4.') ? RESULT.invalidUri : RESULT.connectionLost;
            return end(result, `GET ${uri} answered ${response.code}`);
        }
        const bytes = response.payload;
        if (options['max-size'] && bytes.length > Number(options['max-size'])) {
            return end(RESULT.notEnoughFlash, `${bytes.length} bytes do not fit in ${options['max-size']}`);
        }
        over = true;
        try {
            fs.writeFileSync(options.out, bytes);
        } catch (error) {
            over = false;
            return end(RESULT.updateFailed, `writing ${options.out}: ${error.message}`);
        }
        const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
        emit('downloaded', { uri, size: bytes.length, sha256, file: options.out });
        setTimeout(() => {
            if (mine === download) {
                setFirmware(STATE.downloaded, RESULT.initial);
            }
        }, Number(options['hold-ms']));
    });
    request.on('timeout', (error) => end(RESULT.connectionLost, `GET ${uri}: ${error.message}`));
    request.on('error', (error) => end(RESULT.connectionLost, `GET ${uri}: ${error.message}`));
    request.end();
}

function install() {
    setFirmware(STATE.updating, RESULT.initial);
    setTimeout(() => {
        set('/3/0', 3, options['next-version']);
        setFirmware(STATE.idle, RESULT.success);
        emit('installed', { version: options['next-version'] });
        reboot();
    }, Number(options['install-ms']));
}

// ---- The library's handlers ---------------------------------------------------------------

function coapError(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
}

function onRead(objectType, objectId, resourceId, value, callback) {
    emit('read', { path: `/${objectType}/${objectId}/${resourceId}`, value: String(value) });
    callback(null); // the stored value
}

// The library has already stored `value` when this runs; the callback's error is the answer.
function onWrite(objectType, objectId, resourceId, value, callback) {
    const path = `/${objectType}/${objectId}/${resourceId}`;
    emit('write', { path, value });
    if (path === '/5/0/1') {
        callback(null);
        if (value === '') {
            reset();
        } else {
            startDownload(value);
        }
    } else if (path === '/5/0/0') {
        if (value === '\u0000' || value === '') {
            callback(null);
            reset();
        } else {
            callback(coapError('4.00', 'pull only: no Block1 reassembly'));
        }
    } else {
        callback(null);
    }
}

function onExecute(objectType, objectId, resourceId, args, callback) {
    const path = `/${objectType}/${objectId}/${resourceId}`;
    emit('execute', { path, arguments: args });
    if (path === '/5/0/2') {
        if (state() !== STATE.downloaded) {
            return callback(coapError('4.05', `Update in State ${state()}`));
        }
        callback(null);
        install();
    } else {
        callback(null);
    }
}

function setHandlers(deviceInformation) {
    client.setHandler(deviceInformation.serverInfo, 'read', onRead);
    client.setHandler(deviceInformation.serverInfo, 'write', onWrite);
    client.setHandler(deviceInformation.serverInfo, 'execute', onExecute);
}

// ---- Registration ------------------------------------------------------------------------

let current = null; // the device information of the live registration
let registrations = 0;
let updates = null;

function register() {
    client.register(options.host, Number(options.port), null, options.endpoint, (error, info) => {
        if (error) {
            emit('error', { message: `registration failed: ${error.message || error}` });
            process.exit(1);
        }
        current = info;
        registrations += 1;
        setHandlers(info);
        emit('registered', {
            endpoint: options.endpoint,
            location: info.location,
            port: info.localPort,
            count: registrations,
        });
        scheduleUpdates();
    });
}

// The library sends no Update by itself. Each Update it sends leaves from a new port and it
// then listens there too (its earlier listener stays open).
function scheduleUpdates() {
    clearInterval(updates);
    const every = Math.max(1, Number(options.lifetime) * 750);
    updates = setInterval(() => {
        client.update(current, (error, info) => {
            if (error) {
                return emit('error', { message: `registration update failed: ${error.message || error}` });
            }
            current = info;
            setHandlers(info);
            emit('update', { port: info.localPort });
        });
    }, every);
}

function reboot() {
    clearInterval(updates);
    const previous = current;
    current = null;
    if (options.reboot === 'deregister') {
        client.unregister(previous, (error) => {
            if (error) {
                emit('error', { message: `de-registration failed: ${error.message || error}` });
            } else {
                emit('deregistered', {});
            }
            register();
        });
    } else {
        // Gone without a word, as a device that loses power: observations dropped, listener
        // closed, a new Register from a new port.
        client.cancellAllObservers(() => {
            previous.serverInfo.server.close();
            register();
        });
    }
}

createObjects((error) => {
    if (error) {
        emit('error', { message: `creating the objects: ${error.message}` });
        process.exit(1);
    }
    register();
});

process.on('SIGTERM', () => process.exit(0));
