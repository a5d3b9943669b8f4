'use strict';
// Tests of the built-in RFC 6455 client (websocket-client.js) against a raw TCP server
// written here from the RFC (no `ws`): handshake checks, masking, 7/16/64-bit lengths in
// both directions, fragmentation, ping/pong, close handshake and protocol errors.

const net = require('node:net');
const crypto = require('node:crypto');
const test = require('node:test');
const assert = require('node:assert/strict');
const {
  RawWebSocket,
  acceptFor,
  envelopeFrame,
  maskInPlace,
  textFrame,
} = require('../websocket-client');

const TIMEOUT_MS = 5000;

function naiveMask(buf, key) {
  const out = Buffer.from(buf);
  for (let i = 0; i < out.length; i += 1) out[i] ^= key[i % 4];
  return out;
}

// Decodes one client frame at the start of buf: null if incomplete.
function decodeClientFrame(buf) {
  if (buf.length < 2) return null;
  let length = buf[1] & 0x7f;
  let at = 2;
  let lengthForm = 7;
  if (length === 126) {
    if (buf.length < 4) return null;
    length = buf.readUInt16BE(2);
    at = 4;
    lengthForm = 16;
  } else if (length === 127) {
    if (buf.length < 10) return null;
    length = Number(buf.readBigUInt64BE(2));
    at = 10;
    lengthForm = 64;
  }
  const masked = (buf[1] & 0x80) !== 0;
  const key = masked ? buf.subarray(at, at + 4) : Buffer.alloc(4);
  at += masked ? 4 : 0;
  if (buf.length < at + length) return null;
  return {
    fin: (buf[0] & 0x80) !== 0,
    opcode: buf[0] & 0x0f,
    masked,
    lengthForm,
    payload: naiveMask(buf.subarray(at, at + length), key),
    size: at + length,
  };
}

function serverFrame(opcode, payload, { fin = true, mask = false } = {}) {
  const len = payload.length;
  const head = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.alloc(head + (mask ? 4 : 0) + len);
  out[0] = (fin ? 0x80 : 0) | opcode;
  if (len < 126) out[1] = len;
  else if (len < 65536) {
    out[1] = 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 127;
    out.writeBigUInt64BE(BigInt(len), 2);
  }
  if (mask) out[1] |= 0x80;
  payload.copy(out, head + (mask ? 4 : 0));
  return out;
}

// A one-connection WebSocket server from the RFC. opts.reply(key) returns the upgrade
// response head (default: a correct 101).
async function startRawServer(opts = {}) {
  const srv = { frames: [], waiters: [], upgradeHead: null, ended: false };
  srv.server = net.createServer((socket) => {
    srv.socket = socket;
    let buf = Buffer.alloc(0);
    let upgraded = false;
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        srv.upgradeHead = buf.toString('latin1', 0, end);
        buf = buf.subarray(end + 4);
        upgraded = true;
        const key = /Sec-WebSocket-Key: (.*)/i.exec(srv.upgradeHead)[1].trim();
        const accept = crypto.createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
        socket.write(
          opts.reply
            ? opts.reply(accept)
            : `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
        );
      }
      for (;;) {
        const frame = decodeClientFrame(buf);
        if (!frame) break;
        buf = buf.subarray(frame.size);
        srv.frames.push(frame);
        srv.waiters.splice(0).forEach((w) => w());
      }
    });
    socket.on('end', () => {
      srv.ended = true;
      socket.end();
    });
    socket.on('error', () => {});
  });
  srv.nextFrame = async () => {
    while (srv.frames.length === 0) {
      await new Promise((r) => srv.waiters.push(r));
    }
    return srv.frames.shift();
  };
  srv.send = (buf) => srv.socket.write(buf);
  await new Promise((r) => srv.server.listen(0, '127.0.0.1', r));
  srv.port = srv.server.address().port;
  srv.close = () => {
    if (srv.socket) srv.socket.destroy();
    return new Promise((r) => srv.server.close(() => r()));
  };
  return srv;
}

// Opens a RawWebSocket to srv; resolves once open (or closed) with the recorded events.
function openClient(srv) {
  const events = { messages: [], errors: [], close: null, waiters: [] };
  const notify = () => events.waiters.splice(0).forEach((w) => w());
  let opened;
  const openP = new Promise((r) => {
    opened = r;
  });
  const ws = new RawWebSocket(
    { host: '127.0.0.1', port: srv.port, hostHeader: `127.0.0.1:${srv.port}`, path: '/ws?fn=f' },
    {
      open: () => opened(true),
      message: (data, isBinary) => {
        events.messages.push({ data: Buffer.from(data), isBinary });
        notify();
      },
      error: (message) => events.errors.push(message),
      close: (code, reason) => {
        events.close = { code, reason };
        opened(false);
        notify();
      },
    },
  );
  events.until = async (pred) => {
    while (!pred()) await new Promise((r) => events.waiters.push(r));
  };
  return { ws, events, opened: openP };
}

function within(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

test('maskInPlace matches the RFC byte loop and is its own inverse, aligned or not', () => {
  const key = Buffer.from([0x12, 0xab, 0xff, 0x01]);
  for (const size of [0, 1, 3, 4, 5, 31, 32, 33, 125, 1000, 65536 + 3]) {
    for (const offset of [0, 1, 2, 3]) {
      const backing = crypto.randomBytes(size + offset + 8);
      const original = Buffer.from(backing.subarray(offset, offset + size));
      const buf = backing.subarray(offset, offset + size);
      maskInPlace(buf, 0, size, key[0], key[1], key[2], key[3]);
      assert.deepEqual(buf, naiveMask(original, key), `size ${size} offset ${offset}`);
      maskInPlace(buf, 0, size, key[0], key[1], key[2], key[3]);
      assert.deepEqual(buf, original);
    }
  }
});

test('client frames are masked with fresh keys and use 7-, 16- and 64-bit lengths', () => {
  const keys = new Set();
  for (const [size, form] of [[0, 7], [125, 7], [126, 16], [65535, 16], [65536, 64], [70001, 64]]) {
    const text = 'x'.repeat(size);
    const frame = decodeClientFrame(textFrame(text));
    assert.equal(frame.masked, true);
    assert.equal(frame.lengthForm, form, `length ${size}`);
    assert.equal(frame.fin, true);
    assert.equal(frame.opcode, 1);
    assert.equal(frame.payload.toString(), text);
  }
  for (let i = 0; i < 50; i += 1) {
    const raw = textFrame('abcd');
    keys.add(raw.subarray(2, 6).toString('hex'));
  }
  assert.ok(keys.size > 45, 'masking keys repeat');
  const env = decodeClientFrame(envelopeFrame('{"type":"response","request_id":"r-1"}', 'hello'));
  assert.equal(env.opcode, 2);
  assert.equal(
    env.payload.toString('hex'),
    `00000026${Buffer.from('{"type":"response","request_id":"r-1"}hello').toString('hex')}`,
    'the example envelope of docs/websocket-protocol.md',
  );
  const big = Buffer.alloc(70000, 7);
  const bigEnv = decodeClientFrame(envelopeFrame('{}', big));
  assert.equal(bigEnv.lengthForm, 64);
  assert.deepEqual(bigEnv.payload.subarray(6), big);
});

test('handshake, text and binary both ways, large and chunked server frames', async () => {
  const srv = await startRawServer();
  const { ws, events, opened } = openClient(srv);
  try {
    assert.equal(await within(opened, 'open'), true);
    assert.match(srv.upgradeHead, /^GET \/ws\?fn=f HTTP\/1\.1\r\n/);
    assert.match(srv.upgradeHead, /\r\nSec-WebSocket-Version: 13(\r\n|$)/);
    const key = /Sec-WebSocket-Key: (.*)/.exec(srv.upgradeHead)[1];
    assert.equal(Buffer.from(key, 'base64').length, 16);
    assert.equal(acceptFor('dGhlIHNhbXBsZSBub25jZQ=='), 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=');

    ws.sendText('héllo ✓');
    const text = await within(srv.nextFrame(), 'text frame');
    assert.equal(text.payload.toString(), 'héllo ✓');
    const payload = crypto.randomBytes(200000);
    ws.sendEnvelope('{"type":"response"}', payload);
    const env = await within(srv.nextFrame(), 'envelope');
    assert.equal(env.lengthForm, 64);
    assert.deepEqual(env.payload.subarray(4 + 19), payload);

    // Server frames with 16- and 64-bit lengths, written in small pieces.
    const mid = Buffer.alloc(60000, 'a');
    const large = crypto.randomBytes(300000);
    const wire = Buffer.concat([serverFrame(1, mid), serverFrame(2, large), serverFrame(1, Buffer.from('{}'))]);
    for (let at = 0; at < wire.length; at += 7001) srv.send(wire.subarray(at, at + 7001));
    await within(events.until(() => events.messages.length === 3), 'three messages');
    assert.deepEqual(events.messages[0], { data: mid, isBinary: false });
    assert.deepEqual(events.messages[1], { data: large, isBinary: true });
    assert.equal(events.messages[2].data.toString(), '{}');
  } finally {
    ws.terminate();
    await srv.close();
  }
});

test('fragmented message with a ping in between; the ping is answered with its bytes', async () => {
  const srv = await startRawServer();
  const { ws, events, opened } = openClient(srv);
  try {
    await within(opened, 'open');
    srv.send(
      Buffer.concat([
        serverFrame(1, Buffer.from('{"type":'), { fin: false }),
        serverFrame(0, Buffer.from('"invo'), { fin: false }),
        serverFrame(9, Buffer.from('are you there')),
        serverFrame(0, Buffer.from('cation"}')),
      ]),
    );
    const pong = await within(srv.nextFrame(), 'pong');
    assert.equal(pong.opcode, 10);
    assert.equal(pong.masked, true);
    assert.equal(pong.payload.toString(), 'are you there');
    await within(events.until(() => events.messages.length === 1), 'message');
    assert.equal(events.messages[0].data.toString(), '{"type":"invocation"}');
    assert.equal(events.messages[0].isBinary, false);
  } finally {
    ws.terminate();
    await srv.close();
  }
});

test('server close frame is echoed with its code; the close handler gets code and reason', async () => {
  const srv = await startRawServer();
  const { events, opened } = openClient(srv);
  try {
    await within(opened, 'open');
    const body = Buffer.concat([Buffer.from([0x03, 0xf0]), Buffer.from('policy')]); // 1008
    srv.send(serverFrame(8, body));
    const echo = await within(srv.nextFrame(), 'close echo');
    assert.equal(echo.opcode, 8);
    assert.equal(echo.payload.readUInt16BE(0), 1008);
    await within(events.until(() => events.close), 'close');
    assert.deepEqual(events.close, { code: 1008, reason: 'policy' });
    assert.deepEqual(events.errors, []);
  } finally {
    await srv.close();
  }
});

test('client close() sends a close frame and completes when the server closes', async () => {
  const srv = await startRawServer();
  const { ws, events, opened } = openClient(srv);
  try {
    await within(opened, 'open');
    ws.close();
    const frame = await within(srv.nextFrame(), 'close frame');
    assert.equal(frame.opcode, 8);
    assert.equal(frame.payload.readUInt16BE(0), 1000);
    assert.equal(ws.isOpen, false);
    srv.send(serverFrame(8, frame.payload));
    srv.socket.end();
    await within(events.until(() => events.close), 'close');
    assert.equal(events.close.code, 1000);
  } finally {
    await srv.close();
  }
});

test('protocol errors: a masked server frame closes with 1002, a bad UTF-8 text with 1007', async () => {
  for (const [frame, code, message] of [
    [serverFrame(1, Buffer.from('hi'), { mask: true }), 1002, /MASK must be clear/],
    [serverFrame(1, Buffer.from([0xc3, 0x28])), 1007, /invalid UTF-8/],
    [serverFrame(0, Buffer.from('x')), 1002, /continuation without a message/],
    [Buffer.from([0x81 | 0x40, 0]), 1002, /RSV bits/],
  ]) {
    const srv = await startRawServer();
    const { events, opened } = openClient(srv);
    try {
      await within(opened, 'open');
      srv.send(frame);
      const close = await within(srv.nextFrame(), 'close frame');
      assert.equal(close.opcode, 8);
      assert.equal(close.payload.readUInt16BE(0), code);
      await within(events.until(() => events.close), 'close');
      assert.match(events.errors[0], message);
      assert.deepEqual(events.messages, []);
    } finally {
      await srv.close();
    }
  }
});

test('refused or wrong upgrades fail with the reasons the ws package gives', async () => {
  const cases = [
    [() => 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n', 'Unexpected server response: 404'],
    [
      () => 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n',
      'Invalid Sec-WebSocket-Accept header',
    ],
    [
      (accept) =>
        `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
      'Server sent a Sec-WebSocket-Extensions header but no extension was requested',
    ],
  ];
  for (const [reply, expected] of cases) {
    const srv = await startRawServer({ reply });
    const { events, opened } = openClient(srv);
    try {
      assert.equal(await within(opened, 'outcome'), false);
      assert.deepEqual(events.errors, [expected]);
      assert.equal(events.close.code, 1006);
    } finally {
      await srv.close();
    }
  }
});
