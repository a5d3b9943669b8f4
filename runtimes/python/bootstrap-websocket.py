"""Lambda@Home Python runtime: WebSocket Runtime API loop and its built-in RFC 6455 client.

Loaded by path from bootstrap.py, which passes itself in as `rt`: handler invocation,
context, error shapes and marshalling all come from there. Owns the connection to
ws://AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/websocket?fn=NAME, the register message,
ping/pong, and reconnection. `run` only returns (with a reason) when the caller should fall
back to HTTP: the first connection failed, or reconnecting after a drop kept failing.
Runs on the runtime's only thread with blocking I/O: a runtime serves one invocation at a
time, so there is nothing to multiplex.

The client is `RawWebSocket` below (standard library only): upgrade handshake with the
Sec-WebSocket-Accept check, masked client frames sent with one sendmsg (header and payload
parts, never concatenated), unmasked server frames received into one reusable buffer,
7/16/64-bit lengths, fragmented messages, ping frames answered with pong frames, the close
handshake. LAMBDA_WS_CLIENT=library uses the `websockets` package (>=11) instead.
Responses go out as binary envelopes (the server never parses the payload, and a handler's
bytes travel verbatim as over HTTP); errors as text messages; a handler's generator as
`response_chunk` envelopes and a `response_end` (docs/streaming.md).
Limits: a server message over MESSAGE_BYTES_MAX ends the connection (close 1009).
Invariant: nothing is logged per invocation unless LAMBDA_RUNTIME_DEBUG is set.
Protocol: docs/websocket-protocol.md in the repository.
"""

import base64
import json
import os
import socket
import struct
import sys
import time

try:
    # CPython's own SHA-1: hashlib would load OpenSSL's (about 1 ms of a first start) for the one
    # digest of the handshake.
    from _sha1 import sha1
except ImportError:  # another interpreter
    from hashlib import sha1

# After a connection that served invocations drops: 50 ms doubling, capped at 2 s.
reconnect_attempts_max = 10
reconnect_backoff_first_s = 0.05
reconnect_backoff_max_s = 2.0
open_timeout_s = 5.0
close_timeout_s = 1.0

# The server never sends a message over 8 MiB; twice that leaves room for other servers while
# refusing, before buffering it, a length no Runtime API message has.
MESSAGE_BYTES_MAX = 16 * 1024 * 1024
# Received frames up to this size are read into one reusable buffer; larger ones straight
# into a buffer of their own size.
RECV_BUFFER_BYTES = 256 * 1024
# An upgrade response head larger than this is not from a Runtime API.
HANDSHAKE_HEAD_BYTES_MAX = 64 * 1024
# A control frame carries at most 125 bytes (RFC 6455 section 5.5).
CONTROL_BYTES_MAX = 125
# Largest JSON header of a binary envelope (the server's BINARY_HEADER_BYTES_MAX).
BINARY_HEADER_BYTES_MAX = 64 * 1024
# Masking keys are cut from a pool read from os.urandom, so a frame costs no syscall of its own.
MASK_POOL_BYTES = 4096

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA

PONG = '{"type":"pong"}'

# What `?fn=` keeps unescaped: RFC 3986's unreserved characters (urllib.parse.quote with
# safe="", without importing urllib.parse, about 2 ms of a first start).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text):
    return "".join(chr(b) if b in _UNRESERVED else "%%%02X" % b for b in text.encode())


class ConnectionClosed(Exception):
    """The connection ended: a close frame, end of stream, or a protocol error."""


class InvalidHandshake(Exception):
    """The upgrade response is not a valid 101 for our key."""


class InvalidStatus(InvalidHandshake):
    """The server answered the upgrade with another status than 101."""


# ----------------------------------------------------------------------------- framing


_mask_pool = b""
_mask_pos = MASK_POOL_BYTES


def _mask_key():
    global _mask_pool, _mask_pos
    if _mask_pos == MASK_POOL_BYTES:
        _mask_pool, _mask_pos = os.urandom(MASK_POOL_BYTES), 0
    _mask_pos += 4
    return _mask_pool[_mask_pos - 4 : _mask_pos]


def after_fork():
    """In a fork of a template: draw a fresh masking-key pool (siblings must not share one)."""
    global _mask_pool, _mask_pos
    _mask_pool, _mask_pos = b"", MASK_POOL_BYTES


def mask(data, key, offset=0):
    """`data` XOR the 4-byte `key` (RFC 6455 section 5.3), the key's phase starting at `offset`.

    One big-integer XOR over the whole payload: linear and done in C, far faster than a loop.
    Masking twice with the same key and offset gives back the data.
    """
    n = len(data)
    if not n:
        return b""
    if offset & 3:
        key = key[offset & 3 :] + key[: offset & 3]
    keys = (key * ((n + 3) >> 2))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def frame_head(opcode, length, key):
    """FIN, opcode, MASK bit with the 7/16/64-bit length, and the masking key."""
    if length < 126:
        return bytes((0x80 | opcode, 0x80 | length)) + key
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0xFE, length) + key
    return struct.pack("!BBQ", 0x80 | opcode, 0xFF, length) + key


def accept_for(key):
    return base64.b64encode(sha1(key.encode() + WS_GUID).digest()).decode()


def connect_tcp(host, port, timeout):
    """A TCP connection to `host`:`port`. An IP literal (what AWS_LAMBDA_RUNTIME_API holds) is
    connected without getaddrinfo: `socket.getaddrinfo` encodes the host with the "idna" codec,
    whose first use imports encodings.idna, stringprep and unicodedata, 1.5-6 ms of a forked
    instance's start (measured: two thirds of a Python WebSocket later-instance start)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((host, port), timeout=timeout)


def prewarm():
    """In a fork template, before it forks: initialises what every fork's first connection
    would otherwise initialise on its own, the handshake's SHA-1 (its first use). The
    masking-key pool stays per fork (`after_fork`)."""
    accept_for("prewarm")


class RawWebSocket:
    """One client connection; `recv` returns (message, is_binary) and answers control frames."""

    def __init__(self, host, port, host_header, path, headers=()):
        """`headers`: extra request header lines of the upgrade (`Name: value`, already checked)."""
        sock = connect_tcp(host, port, open_timeout_s)
        try:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rest, self.registered = self._handshake(sock, host_header, path, headers)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.close_sent = False
        self._buf = bytearray(RECV_BUFFER_BYTES)
        self._view = memoryview(self._buf)
        self._buf[: len(rest)] = rest
        self._start, self._end = 0, len(rest)

    @staticmethod
    def _handshake(sock, host_header, path, extra_headers=()):
        """Returns the bytes read past the 101's head, and whether the server took the
        registration from the request (`Lambda-Runtime-Registered: true`)."""
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                "Sec-WebSocket-Key: %s\r\n%sSec-WebSocket-Version: 13\r\n\r\n"
                % (path, host_header, key, "".join(h + "\r\n" for h in extra_headers))
            ).encode("latin-1")
        )
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > HANDSHAKE_HEAD_BYTES_MAX:
                raise InvalidHandshake("upgrade response head too large")
            chunk = sock.recv(4096)
            if not chunk:
                raise InvalidHandshake("connection closed during the upgrade")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise InvalidHandshake("invalid status line %r" % lines[0][:100])
        if parts[1] != "101":
            raise InvalidStatus("server rejected WebSocket connection: HTTP %s" % parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            raise InvalidHandshake("invalid Upgrade header")
        tokens = [t.strip().lower() for t in headers.get("connection", "").split(",")]
        if "upgrade" not in tokens:
            raise InvalidHandshake("invalid Connection header")
        if headers.get("sec-websocket-accept") != accept_for(key):
            raise InvalidHandshake("invalid Sec-WebSocket-Accept header")
        if "sec-websocket-extensions" in headers or "sec-websocket-protocol" in headers:
            raise InvalidHandshake("server negotiated an extension or subprotocol not asked for")
        return rest, headers.get("lambda-runtime-registered", "").lower() == "true"

    # -------------------------------------------------------------- sending

    def _send(self, opcode, parts, length):
        key = _mask_key()
        buffers = [frame_head(opcode, length, key)]
        offset = 0
        for part in parts:
            buffers.append(mask(part, key, offset))
            offset += len(part)
        sent = self.sock.sendmsg(buffers)
        total = len(buffers[0]) + length
        if sent < total:  # a blocking sendmsg is only cut short by a signal
            self.sock.sendall(b"".join(buffers)[sent:])

    def send_text(self, text):
        data = text.encode()
        self._send(OP_TEXT, (data,), len(data))

    def send_envelope(self, header, payload):
        """Binary envelope: [u32 BE header_len][JSON header][payload], header and payload bytes."""
        prefix = struct.pack("!I", len(header)) + header
        self._send(OP_BINARY, (prefix, payload), len(prefix) + len(payload))

    def close(self, code=1000):
        """Close handshake (bounded by close_timeout_s), then the socket is closed."""
        try:
            if not self.close_sent:
                self.close_sent = True
                self._send(OP_CLOSE, (struct.pack("!H", code),), 2)
            self.sock.shutdown(socket.SHUT_WR)
            self.sock.settimeout(close_timeout_s)
            while self.sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.sock.close()

    # -------------------------------------------------------------- receiving

    def _fill(self, need):
        """Buffers at least `need` bytes from _start (need <= RECV_BUFFER_BYTES)."""
        while self._end - self._start < need:
            if self._start + need > RECV_BUFFER_BYTES:
                size = self._end - self._start
                self._buf[:size] = self._buf[self._start : self._end]
                self._start, self._end = 0, size
            got = self.sock.recv_into(self._view[self._end :])
            if not got:
                raise ConnectionClosed("no close frame received")
            self._end += got

    def _fail(self, code, why):
        if not self.close_sent:
            self.close_sent = True
            try:
                self._send(OP_CLOSE, (struct.pack("!H", code),), 2)
            except OSError:
                pass
        raise ConnectionClosed("protocol error: %s (sent close %d)" % (why, code))

    def _read_frame(self):
        self._fill(2)
        buf, s = self._buf, self._start
        b0, b1 = buf[s], buf[s + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            self._fill(4)
            s = self._start
            length, head = int.from_bytes(self._buf[s + 2 : s + 4], "big"), 4
        elif length == 127:
            self._fill(10)
            s = self._start
            length, head = int.from_bytes(self._buf[s + 2 : s + 10], "big"), 10
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if b0 & 0x70:
            self._fail(1002, "RSV bits set")
        if b1 & 0x80:
            self._fail(1002, "masked server frame")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG or not fin or length > CONTROL_BYTES_MAX:
                self._fail(1002, "invalid control frame")
        elif opcode > OP_BINARY:
            self._fail(1002, "unknown opcode %d" % opcode)
        elif length > MESSAGE_BYTES_MAX:
            self._fail(1009, "frame of %d bytes" % length)
        if head + length <= RECV_BUFFER_BYTES:
            self._fill(head + length)
            s = self._start + head
            payload = self._buf[s : s + length]
            self._start = s + length
            if self._start == self._end:
                self._start = self._end = 0
            return fin, opcode, payload
        # Large frame: what is buffered, then the rest straight into its own buffer.
        payload = bytearray(length)
        have = self._end - self._start - head
        payload[:have] = self._buf[self._start + head : self._end]
        self._start = self._end = 0
        view = memoryview(payload)
        while have < length:
            got = self.sock.recv_into(view[have:])
            if not got:
                raise ConnectionClosed("no close frame received")
            have += got
        return fin, opcode, payload

    def recv(self):
        """The next data message as (bytearray, is_binary); raises ConnectionClosed."""
        fragments, fragments_opcode, fragments_bytes = None, 0, 0
        while True:
            fin, opcode, payload = self._read_frame()
            if opcode == OP_TEXT or opcode == OP_BINARY:
                if fragments is not None:
                    self._fail(1002, "new message before the last one ended")
                if fin:
                    return payload, opcode == OP_BINARY
                fragments, fragments_opcode, fragments_bytes = [payload], opcode, len(payload)
            elif opcode == OP_CONTINUATION:
                if fragments is None:
                    self._fail(1002, "continuation without a message")
                fragments.append(payload)
                fragments_bytes += len(payload)
                if fragments_bytes > MESSAGE_BYTES_MAX:
                    self._fail(1009, "message of more than %d bytes" % MESSAGE_BYTES_MAX)
                if fin:
                    return bytearray().join(fragments), fragments_opcode == OP_BINARY
            elif opcode == OP_PING:
                if not self.close_sent:
                    self._send(OP_PONG, (payload,), len(payload))
            elif opcode == OP_CLOSE:
                self._on_close_frame(payload)
            # OP_PONG: nothing to do

    def _on_close_frame(self, payload):
        if len(payload) == 1:
            self._fail(1002, "invalid close frame")
        code = int.from_bytes(payload[:2], "big") if payload else 1005
        reason = bytes(payload[2:]).decode("utf-8", "replace")
        if not self.close_sent:
            # Echo the status code (RFC 6455 section 5.5.1).
            self.close_sent = True
            echo = payload[:2]
            try:
                self._send(OP_CLOSE, (echo,), len(echo))
            except OSError:
                pass
        raise ConnectionClosed(
            "received close frame %d%s" % (code, " (%s)" % reason if reason else "")
        )


class LibraryWebSocket:
    """The `websockets` package's sync client behind RawWebSocket's interface."""

    def __init__(self, url):
        from websockets.sync.client import connect

        options = {
            "compression": None,
            "max_size": None,
            "open_timeout": open_timeout_s,
            "close_timeout": close_timeout_s,
        }
        try:
            # websockets >= 15: no library keepalive (the protocol has its own ping) and no
            # proxy from the environment: the Runtime API is always reached directly.
            ws = connect(url, ping_interval=None, proxy=None, **options)
        except TypeError:
            ws = connect(url, **options)
        sock = getattr(ws, "socket", None)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws = ws

    def recv(self):
        message = self.ws.recv()
        return message, message.__class__ is not str

    def send_text(self, text):
        self.ws.send(text)

    def send_envelope(self, header, payload):
        self.ws.send(struct.pack("!I", len(header)) + header + payload)

    def close(self):
        self.ws.close()


# ----------------------------------------------------------------------------- session


def run(rt, handler):
    """Serve invocations over WebSocket; returns the reason to fall back to HTTP."""
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    path = "/2018-06-01/runtime/websocket?fn=%s" % quote(function_name)
    register = json.dumps(
        {
            "type": "register",
            "function_name": function_name,
            "runtime": os.environ.get("LAMBDA_RUNTIME_NAME", ""),
            "version": rt.FUNCTION_VERSION,
            "instance_id": os.environ.get("LAMBDA_INSTANCE_ID", ""),
        }
    )
    errors = (OSError, ConnectionClosed, InvalidHandshake)
    if os.environ.get("LAMBDA_WS_CLIENT", "").lower() == "library":
        from websockets.exceptions import WebSocketException

        errors += (WebSocketException,)
        url = "ws://%s%s" % (rt.API_ADDRESS, path)

        def open_connection():
            return LibraryWebSocket(url)

    else:
        host, port = rt.api_host_port()
        headers = register_headers(
            os.environ.get("LAMBDA_INSTANCE_ID", ""),
            os.environ.get("LAMBDA_RUNTIME_NAME", ""),
            rt.FUNCTION_VERSION,
        )

        def open_connection():
            return RawWebSocket(host, port, rt.API_ADDRESS, path, headers)

    ever_served = False
    failures = 0
    delay = reconnect_backoff_first_s
    while True:
        try:
            ws = _open(open_connection, register)
            rt.debug("WebSocket connected")
            served, reason = _serve(rt, ws, handler, errors)
        except errors as e:
            served, reason = False, _describe(e)
        if served:
            ever_served, failures, delay = True, 0, reconnect_backoff_first_s
            continue
        if not ever_served:
            return reason
        failures += 1
        if failures >= reconnect_attempts_max:
            return "reconnect failed after %d attempts: %s" % (failures, reason)
        time.sleep(delay)
        delay = min(delay * 2, reconnect_backoff_max_s)


def register_headers(instance_id, runtime, version):
    """The registration as upgrade request headers (docs/websocket-protocol.md, "Registering in
    the upgrade request"): a server that takes it answers the 101 with `Lambda-Runtime-Registered:
    true` and the runtime sends no `register`, which saves a round trip before the first
    invocation; any other server ignores the headers and gets the `register` message. Empty when a
    value cannot travel in a header line (visible ASCII and spaces only)."""
    values = (instance_id, runtime, version)
    if not instance_id or not all(v.isascii() and v.isprintable() for v in values):
        return ()
    return (
        "Lambda-Runtime-Instance-Id: " + instance_id,
        "Lambda-Runtime-Name: " + runtime,
        "Lambda-Runtime-Function-Version: " + version,
    )


def _open(open_connection, register):
    ws = open_connection()
    if getattr(ws, "registered", False):
        return ws
    try:
        ws.send_text(register)
    except BaseException:
        ws.close()
        raise
    return ws


def _describe(exc):
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _serve(rt, ws, handler, errors):
    """Handle messages until the connection ends. Returns (served any invocation, reason)."""
    served = False
    recv, send_text, send_envelope = ws.recv, ws.send_text, ws.send_envelope
    loads, invoke = json.loads, rt.invoke
    quote_str = json.encoder.encode_basestring_ascii
    header_head = b'{"type":"response","request_id":'
    header_tail = (
        ',"headers":{"X-Amz-Executed-Version":%s}}' % json.dumps(rt.FUNCTION_VERSION)
    ).encode()
    try:
        while True:
            message, is_binary = recv()
            event_bytes = None
            try:
                if is_binary:
                    message, event_bytes = _split_envelope(message)
                else:
                    message = loads(message)
                kind = message["type"]
            except (ValueError, TypeError, KeyError) as e:
                sys.stderr.write("Ignoring malformed WebSocket message (%s)\n" % e)
                continue
            if kind == "invocation":
                request_id = message.get("request_id")
                if request_id.__class__ is not str:
                    sys.stderr.write("Ignoring invocation without a request_id\n")
                    continue
                served = True
                rt.debug("Got invocation: %s" % request_id)
                get = message.get
                if event_bytes is None:
                    event = get("payload", {})
                else:
                    try:
                        event = loads(event_bytes) if event_bytes else {}
                    except ValueError as e:
                        send_text(_error_message(request_id, rt.unmarshal_error(e, request_id)))
                        continue
                payload, error = invoke(
                    handler,
                    request_id,
                    event,
                    get("deadline_ms"),
                    get("invoked_function_arn"),
                    get("trace_id"),
                    get("client_context"),
                    get("cognito_identity"),
                )
                if payload.__class__ is rt.StreamedResponse:
                    _stream(ws, request_id, payload)
                    rt.debug("Posted streamed response for: %s" % request_id)
                elif error is None:
                    # Text payloads are ASCII JSON; bytes go out as the handler returned them.
                    if payload.__class__ is str:
                        payload = payload.encode("ascii")
                    send_envelope(header_head + quote_str(request_id).encode() + header_tail, payload)
                    rt.debug("Posted response for: %s" % request_id)
                else:
                    send_text(_error_message(request_id, error))
            elif kind == "ping":
                send_text(PONG)
            elif kind == "error_response":
                text = "WebSocket error_response: %s (%s)" % (
                    message.get("message"),
                    message.get("code"),
                )
                sys.stderr.write(text + "\n")
                if not served:
                    return False, text
            else:
                rt.debug("Ignoring WebSocket message of type %r" % kind)
    except errors as e:
        return served, _describe(e)
    finally:
        ws.close()


def _stream(ws, request_id, streamed):
    """A streamed response: each item as a `response_chunk` binary envelope as soon as the
    handler yields it (the first one declares the content type), then `response_end`, with the
    error if the handler failed mid-stream; a failure before the first item is an `error`."""
    chunk, error = streamed.next_chunk()
    if error is not None:
        ws.send_text(_error_message(request_id, error))
        return
    header = {"type": "response_chunk", "request_id": request_id}
    header["content_type"] = streamed.content_type()
    first = json.dumps(header).encode()
    header.pop("content_type")
    rest = json.dumps(header).encode()
    while chunk is not None:
        ws.send_envelope(first if first is not None else rest, chunk)
        first = None
        chunk, error = streamed.next_chunk()
    end = {"type": "response_end", "request_id": request_id}
    if first is not None:
        end["content_type"] = streamed.content_type()
    if error is not None:
        end["error_type"] = error["errorType"]
        end["error_message"] = error["errorMessage"]
        end["stack_trace"] = error["stackTrace"]
    ws.send_text(json.dumps(end))


def _split_envelope(data):
    """A binary envelope as (header dict, payload bytes)."""
    if len(data) < 4:
        raise ValueError("binary envelope shorter than 4 bytes")
    header_bytes = int.from_bytes(data[:4], "big")
    if header_bytes > BINARY_HEADER_BYTES_MAX or 4 + header_bytes > len(data):
        raise ValueError("binary envelope header length out of range")
    return json.loads(data[4 : 4 + header_bytes]), data[4 + header_bytes :]


def _error_message(request_id, error):
    return json.dumps(
        {
            "type": "error",
            "request_id": request_id,
            "error_message": error["errorMessage"],
            "error_type": error["errorType"],
            "stack_trace": error["stackTrace"],
            "headers": {"X-Amz-Function-Error": "Unhandled"},
        }
    )
