'use strict';
// Hand-rolled RFC 6455 WebSocket client for the Lambda@Home Node.js runtime (node core
// only: net, crypto). It owns one TCP connection to the Runtime API: the upgrade handshake
// (Sec-WebSocket-Key / Sec-WebSocket-Accept check, no subprotocol, no extension), masked
// client frames (text, binary, ping, pong, close), unmasked server frames with 7/16/64-bit
// lengths, reassembly of fragmented messages, answering ping frames with pong frames, and
// the close handshake. It runs on the runtime's single event loop thread.
//
// Why not the `ws` package: one runtime serves one invocation at a time over one connection,
// so what matters is the CPU per message; a frame here is built into one Buffer (header, mask
// key and payload encoded in place, then masked in 4-byte words) and written with a single
// socket.write, and a received frame is sliced out of the chunk it arrived in.
//
// Limits: a server frame or reassembled message over MESSAGE_BYTES_MAX closes the connection
// (1009); control frames carry at most 125 bytes. Invariant: the handlers are called in this
// order: open at most once, then messages, then close exactly once (error, if any, just before
// close).

const net = require('net');
const crypto = require('crypto');
const os = require('os');
const { isUtf8 } = require('buffer'); // node >= 18.14; undefined before (then not checked)

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
// The server never sends a message over 8 MiB; twice that leaves room for other servers while
// still refusing a length that cannot be a Runtime API message before buffering it.
const MESSAGE_BYTES_MAX = 16 * 1024 * 1024;
// A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
const CONTROL_BYTES_MAX = 125;
// An upgrade response head larger than this is not from a Runtime API.
const HANDSHAKE_HEAD_BYTES_MAX = 64 * 1024;
const HANDSHAKE_TIMEOUT_MS = 5000;
// After sending a close frame, how long to wait for the server to close the TCP connection.
const CLOSE_TIMEOUT_MS = 1000;
// Masks come from a pool refilled from the CSPRNG, so a frame costs no syscall of its own.
const MASK_POOL_BYTES = 4096;
// Below this many 4-byte words, a plain byte loop is cheaper than creating a Uint32Array view.
const MASK_WORDS_MIN = 8;
const LITTLE_ENDIAN = os.endianness() === 'LE';

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

const HEAD_END = Buffer.from('\r\n\r\n');

let maskPool = Buffer.allocUnsafe(MASK_POOL_BYTES);
let maskPoolPos = MASK_POOL_BYTES;

// Writes a fresh 4-byte masking key at buf[offset..offset+4].
function writeMaskKey(buf, offset) {
  if (maskPoolPos === MASK_POOL_BYTES) {
    maskPool = crypto.randomFillSync(maskPool);
    maskPoolPos = 0;
  }
  buf[offset] = maskPool[maskPoolPos];
  buf[offset + 1] = maskPool[maskPoolPos + 1];
  buf[offset + 2] = maskPool[maskPoolPos + 2];
  buf[offset + 3] = maskPool[maskPoolPos + 3];
  maskPoolPos += 4;
}

// XORs buf[start..end) in place with the 4-byte key k0..k3 (RFC 6455 §5.3), key byte 0 at
// `start`. Aligned runs go through a Uint32Array view, one XOR per 4 bytes; masking twice
// with the same key restores the bytes.
function maskInPlace(buf, start, end, k0, k1, k2, k3) {
  let i = start;
  const words = (end - start) >>> 2;
  if (words >= MASK_WORDS_MIN && ((buf.byteOffset + start) & 3) === 0) {
    const view = new Uint32Array(buf.buffer, buf.byteOffset + start, words);
    const key = LITTLE_ENDIAN
      ? k0 | (k1 << 8) | (k2 << 16) | (k3 << 24)
      : (k0 << 24) | (k1 << 16) | (k2 << 8) | k3;
    for (let w = 0; w < words; w += 1) view[w] ^= key;
    i += words * 4;
  }
  for (; i + 3 < end; i += 4) {
    buf[i] ^= k0;
    buf[i + 1] ^= k1;
    buf[i + 2] ^= k2;
    buf[i + 3] ^= k3;
  }
  const key = [k0, k1, k2, k3];
  for (let k = 0; i < end; i += 1, k += 1) buf[i] ^= key[k];
}

// Builds one masked client frame in a single Buffer: `fill(frame, offset)` writes the
// `length` payload bytes at `offset`; then the payload is masked in place. The frame is
// placed so that its payload starts 4-byte aligned, for the word-wise mask.
function buildFrame(opcode, length, fill) {
  const ext = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const head = 2 + ext + 4;
  const pad = (4 - (head & 3)) & 3;
  const whole = Buffer.allocUnsafe(pad + head + length);
  const frame = pad ? whole.subarray(pad) : whole;
  frame[0] = 0x80 | opcode;
  if (ext === 0) {
    frame[1] = 0x80 | length;
  } else if (ext === 2) {
    frame[1] = 0x80 | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 0x80 | 127;
    frame.writeUInt32BE(Math.floor(length / 0x100000000), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  const keyAt = 2 + ext;
  writeMaskKey(frame, keyAt);
  if (length > 0) {
    fill(frame, head);
    maskInPlace(frame, head, head + length, frame[keyAt], frame[keyAt + 1], frame[keyAt + 2], frame[keyAt + 3]);
  }
  return frame;
}

function textFrame(text) {
  const length = Buffer.byteLength(text);
  return buildFrame(OP_TEXT, length, (frame, at) => frame.utf8Write(text, at, length));
}

// Binary envelope (docs/websocket-protocol.md): [u32 BE header_len][JSON header][payload].
// header and payload are strings (UTF-8 encoded straight into the frame) or Buffers.
function envelopeFrame(header, payload) {
  const headerBytes = Buffer.byteLength(header);
  const payloadBytes = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  return buildFrame(OP_BINARY, 4 + headerBytes + payloadBytes, (frame, at) => {
    frame.writeUInt32BE(headerBytes, at);
    frame.utf8Write(header, at + 4, headerBytes);
    if (typeof payload === 'string') frame.utf8Write(payload, at + 4 + headerBytes, payloadBytes);
    else payload.copy(frame, at + 4 + headerBytes);
  });
}

function controlFrame(opcode, payload) {
  return buildFrame(opcode, payload.length, (frame, at) => payload.copy(frame, at));
}

function closePayload(code, reason) {
  if (code === undefined) return Buffer.alloc(0);
  const text = Buffer.from(reason || '');
  const out = Buffer.allocUnsafe(2 + Math.min(text.length, CONTROL_BYTES_MAX - 2));
  out.writeUInt16BE(code, 0);
  text.copy(out, 2, 0, out.length - 2);
  return out;
}

function acceptFor(key) {
  return crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
}

// Status line and headers of the upgrade response (names lower-cased).
function parseUpgradeHead(text) {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]);
  const headers = {};
  for (let i = 1; i < lines.length; i += 1) {
    const colon = lines[i].indexOf(':');
    if (colon <= 0) continue;
    const name = lines[i].slice(0, colon).trim().toLowerCase();
    const value = lines[i].slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: m ? Number(m[1]) : 0, headers };
}

// One WebSocket connection. handlers: { open(), message(data: Buffer, isBinary), close(code,
// reason: string), error(message: string) }. The error messages for handshake failures are
// the ones the `ws` package uses, so fallback lines read the same with either client.
class RawWebSocket {
  // `connect`, when given, opens the socket (the bootstrap's connectRuntimeApi: the instance's
  // Unix socket or TCP); otherwise TCP to host:port with Nagle off.
  // `headers`: extra request header lines of the upgrade (`Name: value`, already checked).
  constructor({ host, port, hostHeader, path, connect, headers = [] }, handlers) {
    this.handlers = handlers;
    // The server took the registration from the upgrade request (`Lambda-Runtime-Registered`).
    this.registered = false;
    this.key = crypto.randomBytes(16).toString('base64');
    this.open = false;
    this.closed = false;
    this.closeSent = false;
    this.errored = false;
    this.closeCode = 1006;
    this.closeReason = '';
    this.rest = null; // unparsed bytes (handshake head, or a partial frame header)
    this.collecting = null; // { fin, opcode, payload, filled } of a frame still arriving
    this.fragments = null; // parts of a fragmented message
    this.fragmentOpcode = 0;
    this.fragmentBytes = 0;
    this.closeTimer = null;
    let socket;
    if (connect) {
      socket = connect();
    } else {
      socket = net.connect({ host, port });
      socket.setNoDelay(true);
    }
    this.socket = socket;
    this.handshakeTimer = setTimeout(
      () => this.fail('Opening handshake has timed out'),
      HANDSHAKE_TIMEOUT_MS,
    );
    socket.on('connect', () => {
      socket.write(
        `GET ${path} HTTP/1.1\r\nHost: ${hostHeader}\r\nConnection: Upgrade\r\n` +
          `Upgrade: websocket\r\nSec-WebSocket-Key: ${this.key}\r\n` +
          headers.map((line) => `${line}\r\n`).join('') +
          'Sec-WebSocket-Version: 13\r\n\r\n',
        'latin1',
      );
    });
    socket.on('data', (chunk) => (this.open ? this.onFrameData(chunk) : this.onHandshakeData(chunk)));
    socket.on('error', (err) => this.reportError((err && err.message) || String(err)));
    socket.on('close', () => this.onSocketClosed());
  }

  get isOpen() {
    return this.open && !this.closed && !this.closeSent;
  }

  setRef(referenced) {
    if (referenced) this.socket.ref();
    else this.socket.unref();
  }

  sendText(text, cb) {
    this.socket.write(textFrame(text), cb);
  }

  sendEnvelope(header, payload, cb) {
    this.socket.write(envelopeFrame(header, payload), cb);
  }

  // Starts the close handshake; the connection ends when the server closes it (or after
  // CLOSE_TIMEOUT_MS).
  close(code = 1000, reason = '') {
    if (this.closed || this.closeSent) return;
    if (!this.open) {
      this.terminate();
      return;
    }
    this.closeSent = true;
    this.socket.write(controlFrame(OP_CLOSE, closePayload(code, reason)));
    this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
  }

  terminate() {
    this.socket.destroy();
  }

  reportError(message) {
    if (this.closed || this.errored) return;
    this.errored = true;
    this.handlers.error(message);
  }

  // A failure before or after the handshake: reported once, then the socket is dropped.
  fail(message, closeCode) {
    this.reportError(message);
    if (closeCode !== undefined && this.open && !this.closeSent && !this.socket.destroyed) {
      this.closeSent = true;
      this.socket.end(controlFrame(OP_CLOSE, closePayload(closeCode)));
      this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
      return;
    }
    this.socket.destroy();
  }

  onSocketClosed() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.closeTimer);
    this.handlers.close(this.closeCode, this.closeReason);
  }

  onHandshakeData(chunk) {
    const buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    const end = buf.indexOf(HEAD_END);
    if (end < 0) {
      if (buf.length > HANDSHAKE_HEAD_BYTES_MAX) this.fail('Invalid upgrade response: head too large');
      else this.rest = buf;
      return;
    }
    this.rest = null;
    const { status, headers } = parseUpgradeHead(buf.toString('latin1', 0, end));
    if (status !== 101) return this.fail(`Unexpected server response: ${status}`);
    if ((headers.upgrade || '').toLowerCase() !== 'websocket') return this.fail('Invalid Upgrade header');
    if (!/(^|,)\s*upgrade\s*(,|$)/i.test(headers.connection || '')) {
      return this.fail('Invalid Connection header');
    }
    if (headers['sec-websocket-accept'] !== acceptFor(this.key)) {
      return this.fail('Invalid Sec-WebSocket-Accept header');
    }
    if (headers['sec-websocket-protocol'] !== undefined) {
      return this.fail('Server sent a subprotocol but none was requested');
    }
    if (headers['sec-websocket-extensions'] !== undefined) {
      return this.fail('Server sent a Sec-WebSocket-Extensions header but no extension was requested');
    }
    clearTimeout(this.handshakeTimer);
    this.registered = (headers['lambda-runtime-registered'] || '').toLowerCase() === 'true';
    this.open = true;
    this.handlers.open();
    if (!this.closed && buf.length > end + 4) this.onFrameData(buf.subarray(end + 4));
  }

  // Parses every complete frame in the received bytes; a frame whose payload is still
  // arriving is copied into a buffer of its announced size as the chunks come in.
  onFrameData(chunk) {
    let buf = chunk;
    if (this.rest) {
      buf = Buffer.concat([this.rest, chunk]);
      this.rest = null;
    }
    let pos = 0;
    while (pos < buf.length && !this.closed) {
      const c = this.collecting;
      if (c) {
        const n = Math.min(c.payload.length - c.filled, buf.length - pos);
        buf.copy(c.payload, c.filled, pos, pos + n);
        c.filled += n;
        pos += n;
        if (c.filled < c.payload.length) return;
        this.collecting = null;
        if (!this.onFrame(c.fin, c.opcode, c.payload)) return;
        continue;
      }
      const avail = buf.length - pos;
      if (avail < 2) break;
      const b0 = buf[pos];
      const b1 = buf[pos + 1];
      let length = b1 & 0x7f;
      let head = 2;
      if (length === 126) {
        if (avail < 4) break;
        length = buf.readUInt16BE(pos + 2);
        head = 4;
      } else if (length === 127) {
        if (avail < 10) break;
        const high = buf.readUInt32BE(pos + 2);
        // Above 2^53 a JS number is inexact; any such frame is over the limit anyway.
        length = high > 0x1fffff ? Infinity : high * 0x100000000 + buf.readUInt32BE(pos + 6);
        head = 10;
      }
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if (!this.checkFrameHeader(b0, b1, fin, opcode, length)) return;
      if (avail - head >= length) {
        const payload = buf.subarray(pos + head, pos + head + length);
        pos += head + length;
        if (!this.onFrame(fin, opcode, payload)) return;
        continue;
      }
      const payload = Buffer.allocUnsafe(length);
      const have = avail - head;
      buf.copy(payload, 0, pos + head);
      this.collecting = { fin, opcode, payload, filled: have };
      return;
    }
    if (pos < buf.length && !this.closed) this.rest = buf.subarray(pos);
  }

  checkFrameHeader(b0, b1, fin, opcode, length) {
    if ((b0 & 0x70) !== 0) return this.protocolError('RSV bits must be clear', 1002);
    if ((b1 & 0x80) !== 0) return this.protocolError('MASK must be clear', 1002);
    if (opcode >= OP_CLOSE) {
      if (opcode > OP_PONG) return this.protocolError(`invalid opcode ${opcode}`, 1002);
      if (!fin) return this.protocolError('FIN must be set', 1002);
      if (length > CONTROL_BYTES_MAX) return this.protocolError('invalid payload length', 1002);
      return true;
    }
    if (opcode > OP_BINARY) return this.protocolError(`invalid opcode ${opcode}`, 1002);
    const total = (opcode === OP_CONTINUATION ? this.fragmentBytes : 0) + length;
    if (total > MESSAGE_BYTES_MAX) return this.protocolError('Max payload size exceeded', 1009);
    return true;
  }

  protocolError(what, closeCode) {
    this.fail(`Invalid WebSocket frame: ${what}`, closeCode);
    return false;
  }

  // Handles one complete frame; false when the connection is done and parsing must stop.
  onFrame(fin, opcode, payload) {
    switch (opcode) {
      case OP_TEXT:
      case OP_BINARY:
        if (this.fragments) return this.protocolError('new message before the last one ended', 1002);
        if (fin) return this.deliver(opcode, payload);
        this.fragments = [payload];
        this.fragmentOpcode = opcode;
        this.fragmentBytes = payload.length;
        return true;
      case OP_CONTINUATION: {
        if (!this.fragments) return this.protocolError('continuation without a message', 1002);
        this.fragments.push(payload);
        this.fragmentBytes += payload.length;
        if (!fin) return true;
        const whole = Buffer.concat(this.fragments, this.fragmentBytes);
        this.fragments = null;
        this.fragmentBytes = 0;
        return this.deliver(this.fragmentOpcode, whole);
      }
      case OP_PING:
        if (!this.closeSent) this.socket.write(controlFrame(OP_PONG, payload));
        return true;
      case OP_PONG:
        return true;
      default:
        return this.onCloseFrame(payload);
    }
  }

  deliver(opcode, data) {
    if (opcode === OP_TEXT && isUtf8 && !isUtf8(data)) {
      return this.protocolError('invalid UTF-8 sequence', 1007);
    }
    this.handlers.message(data, opcode === OP_BINARY);
    return !this.closed;
  }

  // The server's close frame: echo its status code (RFC 6455 §5.5.1), then end the
  // connection; the close handler gets the server's code and reason.
  onCloseFrame(payload) {
    if (payload.length === 1) return this.protocolError('invalid close frame', 1002);
    this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
    this.closeReason = payload.length > 2 ? payload.toString('utf8', 2) : '';
    if (!this.closeSent) {
      this.closeSent = true;
      const echo = payload.length >= 2 ? closePayload(this.closeCode) : Buffer.alloc(0);
      this.socket.end(controlFrame(OP_CLOSE, echo));
    } else {
      this.socket.end();
    }
    clearTimeout(this.closeTimer);
    this.closeTimer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
    this.closeTimer.unref();
    return false;
  }
}

module.exports = {
  CLOSE_TIMEOUT_MS,
  HANDSHAKE_TIMEOUT_MS,
  MESSAGE_BYTES_MAX,
  RawWebSocket,
  acceptFor,
  envelopeFrame,
  maskInPlace,
  textFrame,
};
