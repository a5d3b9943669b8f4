"""Lambda@Home Python runtime: WebSocket Runtime API loop (websockets>=11 sync client).

Loaded by path from bootstrap.py, which passes itself in as `rt`: handler invocation,
context, error shapes and marshalling all come from there. Owns the socket to
ws://AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/websocket?fn=NAME, the register message,
ping/pong, and reconnection. `run` only returns (with a reason) when the caller should fall
back to HTTP: the first connection failed, or reconnecting after a drop kept failing.
Invariant: one invocation at a time; nothing is logged per invocation unless
LAMBDA_RUNTIME_DEBUG is set. Protocol: docs/websocket-protocol.md in the repository.
"""

import json
import os
import socket
import sys
import time
from urllib.parse import quote

from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect

# After a connection that served invocations drops: 50 ms doubling, capped at 2 s.
reconnect_attempts_max = 10
reconnect_backoff_first_s = 0.05
reconnect_backoff_max_s = 2.0
open_timeout_s = 5.0
close_timeout_s = 1.0

PONG = '{"type":"pong"}'


class _Rejected(Exception):
    """The server refused this connection (error_response or close before any invocation)."""


def run(rt, handler):
    """Serve invocations over WebSocket; returns the reason to fall back to HTTP."""
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
    url = "ws://%s/2018-06-01/runtime/websocket?fn=%s" % (
        rt.API_ADDRESS,
        quote(function_name, safe=""),
    )
    register = json.dumps(
        {
            "type": "register",
            "function_name": function_name,
            "runtime": os.environ.get("LAMBDA_RUNTIME_NAME", ""),
            "version": rt.FUNCTION_VERSION,
            "instance_id": os.environ.get("LAMBDA_INSTANCE_ID", ""),
        }
    )
    ever_served = False
    failures = 0
    delay = reconnect_backoff_first_s
    while True:
        try:
            ws = _open(url, register)
            rt.debug("WebSocket connected")
            served, reason = _serve(rt, ws, handler)
        except (OSError, WebSocketException) as e:
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


def _open(url, register):
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
    try:
        ws.send(register)
    except BaseException:
        ws.close()
        raise
    return ws


def _describe(exc):
    text = str(exc)
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _serve(rt, ws, handler):
    """Handle messages until the connection ends. Returns (served any invocation, reason)."""
    served = False
    recv, send, loads, invoke = ws.recv, ws.send, json.loads, rt.invoke
    quote_str = json.encoder.encode_basestring_ascii
    version_tail = ',"headers":{"X-Amz-Executed-Version":%s}}' % json.dumps(rt.FUNCTION_VERSION)
    try:
        while True:
            message = recv()
            try:
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
                payload, error = invoke(
                    handler,
                    request_id,
                    get("payload", {}),
                    get("deadline_ms"),
                    get("invoked_function_arn"),
                    get("trace_id"),
                    get("client_context"),
                    get("cognito_identity"),
                )
                if error is None:
                    if payload.__class__ is not str:
                        payload = _embed_bytes(payload)
                    send(
                        '{"type":"response","request_id":'
                        + quote_str(request_id)
                        + ',"payload":'
                        + payload
                        + version_tail
                    )
                    rt.debug("Posted response for: %s" % request_id)
                else:
                    send(_error_message(request_id, error))
            elif kind == "ping":
                send(PONG)
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
    except ConnectionClosed as e:
        return served, _describe(e)
    except OSError as e:
        return served, _describe(e)
    finally:
        ws.close()


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


def _embed_bytes(raw):
    """A handler's bytes result travels verbatim when it is JSON, else as a JSON string."""
    text = raw.decode("utf-8", "replace")
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text)
    return text
