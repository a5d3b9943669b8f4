#!/usr/bin/env python3
"""Lambda@Home Python runtime: entry point, shared invocation core and HTTP loop.

Owns handler loading (with AWS's init error types), LambdaContext, error formatting,
result marshalling and the AWS Runtime API 2018-06-01 client over one keep-alive
http.client connection (standard library only; imported only when the HTTP transport is used). Unless LAMBDA_USE_WEBSOCKET=false it
first tries the WebSocket Runtime API (bootstrap-websocket.py, loaded by path, which
reuses the pieces defined here; its client is built in, or the websockets package with
LAMBDA_WS_CLIENT=library) and falls back to HTTP when that is unavailable.
Response streaming: a handler that returns a generator (any iterator) of bytes/str streams
each item as one chunk (set context.response_content_type before the first yield to declare
a content type); see docs/streaming.md in the repository.
Fork start (docs/cold-starts.md): when the process executor passes a control socket in
_LAMBDA_FORK_CONTROL_FD, this process is a template: it imports the handler (module init) and
then, instead of serving, forks one child per request of the server; each child takes its own
output descriptor and environment and enters the /next loop (`serve_template`).
Docker pool slot (docs/cold-starts-docker.md): with _LAMBDA_SLOT_DIR set, the runtime was started
in a container before its function was known; it waits for the slot's wake-up and takes the
instance's environment from the slot dir (`await_slot_start`), then starts as usual.
Invariant: one invocation at a time; nothing is logged on the warm success path.
Specs: AWS Lambda Runtime API 2018-06-01; docs/websocket-protocol.md in the repository.
"""

import base64
import importlib
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import time
import traceback

API_ADDRESS = os.environ.get("AWS_LAMBDA_RUNTIME_API") or "host.docker.internal:9001"
# The instance's own Unix socket for the Runtime API, when the server gives it one: `@NAME`, an
# abstract socket whose address fills sun_path (the name padded with NULs to 107 bytes).
API_SOCKET = os.environ.get("LAMBDA_RUNTIME_API_SOCKET", "")
ABSTRACT_ADDRESS_BYTES = 107
API_PREFIX = "/2018-06-01/runtime"
DEBUG = bool(os.environ.get("LAMBDA_RUNTIME_DEBUG"))
FUNCTION_VERSION = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION") or "$LATEST"

# A dropped keep-alive connection is retried at once; a Runtime API that stays away is
# retried with backoff for a few seconds, then the runtime exits so the server replaces it.
request_attempts_max = 8
request_backoff_first_s = 0.01
request_backoff_max_s = 1.0

MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

# http.client, imported on first use (`_http_client`): with the email and ssl packages it pulls
# in, it costs about 14 ms of an interpreter's start, and only the HTTP transport and an init
# error need it, so an instance served over WebSocket never imports it.
http = None

# The module path the interpreter started with, before the task root was put first.
_STARTUP_SYS_PATH = list(sys.path)

# Request id of the invocation in progress, read by the logging handler.
_current_request_id = ""
_current_trace_id = None


def debug(message):
    if DEBUG:
        print(message, flush=True)


# ----------------------------------------------------------------------------- errors


class Fault(Exception):
    """A runtime-detected failure with an AWS error type (bad handler, bad context JSON)."""

    def __init__(self, error_type, message, stack_trace=None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


def make_error(message, error_type, stack_trace, request_id=""):
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id or "",
        "stackTrace": stack_trace or [],
    }


def error_from_exception(exc, request_id=""):
    """AWS's error shape for an exception, with the runtime's own frames left out."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename in _RUNTIME_FILES
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    stack = traceback.format_list(traceback.extract_tb(tb)) if tb is not None else []
    return make_error(str(exc), type(exc).__name__, stack, request_id)


def log_error(error):
    """Print an error the way AWS's runtime does: `[ERROR] Type: message` plus traceback."""
    description = "[ERROR]"
    if error["errorType"]:
        description += " " + error["errorType"] + (":" if error["errorMessage"] else "")
    if error["errorMessage"]:
        description += " " + error["errorMessage"]
    lines = [description, "Traceback (most recent call last):"]
    for element in error["stackTrace"]:
        lines.extend(element.splitlines())
    sys.stdout.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- handler


def load_handler(spec):
    """Import `module.function` (module dotted or a path with slashes) from the task root."""
    try:
        module_name, function_name = spec.rsplit(".", 1)
    except ValueError as e:
        raise Fault("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (spec, e))
    if not module_name or not function_name:
        raise Fault("Runtime.MalformedHandlerName", "Bad handler '%s'" % spec)
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise Fault(
            "Runtime.BuiltInModuleConflict",
            "Cannot use built-in module %s as a handler module" % module_name,
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as e:
        raise Fault(
            "Runtime.ImportModuleError",
            "Unable to import module '%s': %s" % (module_name, e),
        )
    except SyntaxError as e:
        trace = ['  File "%s" Line %s\n    %s' % (e.filename, e.lineno, e.text)]
        raise Fault(
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module '%s': %s" % (module_name, e),
            trace,
        )
    try:
        return getattr(module, function_name)
    except AttributeError:
        raise Fault(
            "Runtime.HandlerNotFound",
            "Handler '%s' missing on module '%s'" % (function_name, module_name),
        )


def _http_client():
    """Imports http.client (once) and returns the `http` package. The import runs with the
    module path the interpreter started with: once the function's task root leads sys.path, a
    function's own `email.py`, `ssl.py` or `http/` would otherwise stand in for the standard
    library's under http.client. (An HTTP-only instance loads it before the task root is on
    the path at all: `main`.)"""
    global http
    if http is None:
        path = sys.path[:]
        sys.path[:] = _STARTUP_SYS_PATH
        try:
            import http.client  # noqa: F401  (binds the global `http`)
        finally:
            sys.path[:] = path
    return http


def _http_errors():
    """The exceptions of a failed Runtime API exchange: http.client's once it is loaded."""
    return (OSError,) if http is None else (OSError, http.client.HTTPException)


def api_host_port():
    """Host and port of AWS_LAMBDA_RUNTIME_API (an IPv6 host may be in brackets; 80 if none)."""
    host, _, port = API_ADDRESS.rpartition(":")
    return (host.strip("[]"), int(port)) if host else (port, 80)


def report_init_error(error):
    """POST /runtime/init/error once on a fresh connection; the caller exits next. Written on a
    plain socket: an init error can come after the function's code shadowed a module
    http.client needs, and reporting it must not depend on that."""
    body = json.dumps(error).encode()
    error_type = error["errorType"].encode("ascii", "replace").replace(b"\r", b"").replace(b"\n", b"")
    host, port = api_host_port()
    request = (
        b"POST %s/init/error HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Lambda-Runtime-Function-Error-Type: %s\r\nContent-Length: %d\r\n"
        b"Connection: close\r\n\r\n"
        % (API_PREFIX.encode(), API_ADDRESS.encode(), error_type, len(body))
    )
    try:
        with socket.create_connection((host, port), timeout=5) as sock:
            sock.sendall(request + body)
            reply = b""
            while len(reply) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
        status = reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.") else b""
        if not status.startswith(b"2"):
            raise OSError("Runtime API answered %r" % reply[:100])
    except (OSError, ValueError, IndexError) as e:
        sys.stderr.write("Failed to report init error to %s: %s\n" % (API_ADDRESS, e))


# ----------------------------------------------------------------------------- context


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, data=None):
        data = data or {}
        self.cognito_identity_id = data.get("cognitoIdentityId")
        self.cognito_identity_pool_id = data.get("cognitoIdentityPoolId")


class Client:
    __slots__ = (
        "installation_id",
        "app_title",
        "app_version_name",
        "app_version_code",
        "app_package_name",
    )

    def __init__(self, data):
        for field in self.__slots__:
            setattr(self, field, data.get(field))


class ClientContext:
    __slots__ = ("custom", "env", "client")

    def __init__(self, data):
        self.custom = data.get("custom")
        self.env = data.get("env")
        client = data.get("client")
        self.client = Client(client) if isinstance(client, dict) else None


class LambdaContext:
    """The `context` argument, as AWS's Python runtime builds it."""

    # Fixed for the life of the instance, so read once rather than per invocation.
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION")
    memory_limit_in_mb = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    tenant_id = None

    def __init__(self, request_id, deadline_ms, invoked_function_arn, client_context, identity):
        self.aws_request_id = request_id
        self.invoked_function_arn = invoked_function_arn
        self.client_context = client_context
        self.identity = identity
        self._epoch_deadline_time_in_ms = deadline_ms

    def get_remaining_time_in_millis(self):
        remaining = self._epoch_deadline_time_in_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, message):
        sys.stdout.write(str(message))


def _parse_json_field(value, name):
    """Client context and Cognito identity arrive as JSON text (HTTP) or objects (WS)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as e:
        raise Fault(CONTEXT_UNMARSHAL_ERROR, "Unable to parse %s JSON: %s" % (name, e))


# ----------------------------------------------------------------------------- invoke


def _encode_default(obj):
    # AWS's marshaller serialises Decimal (DynamoDB numbers); everything else is an error.
    import decimal

    if isinstance(obj, decimal.Decimal):
        return int(obj) if obj == obj.to_integral_value() else float(obj)
    raise TypeError("Object of type %s is not JSON serializable" % type(obj).__name__)


# ASCII output is valid UTF-8 whatever the strings hold (lone surrogates included).
_encode = json.JSONEncoder(default=_encode_default).encode


DEFAULT_STREAM_CONTENT_TYPE = "application/octet-stream"


class StreamedResponse:
    """A handler's iterator: each item it yields is one chunk of a streamed response."""

    __slots__ = ("items", "context", "request_id")

    def __init__(self, items, context, request_id):
        self.items = items
        self.context = context
        self.request_id = request_id

    def content_type(self):
        """What the handler declared (context.response_content_type), once it has started."""
        declared = getattr(self.context, "response_content_type", None)
        if not isinstance(declared, str) or not declared or "\n" in declared or "\r" in declared:
            return DEFAULT_STREAM_CONTENT_TYPE
        return declared

    def next_chunk(self):
        """(chunk bytes, None), (None, None) at the end, or (None, error dict) when the
        handler's iterator raised or yielded something that is not bytes or str. Empty items
        are skipped: an empty chunk would end an HTTP chunked body."""
        while True:
            try:
                item = next(self.items)
            except StopIteration:
                return None, None
            except Fault as e:
                error = make_error(e.message, e.error_type, e.stack_trace, self.request_id)
            except Exception as e:
                error = error_from_exception(e, self.request_id)
            else:
                if isinstance(item, str):
                    item = item.encode()
                elif isinstance(item, (bytes, bytearray, memoryview)):
                    item = bytes(item)
                else:
                    message = "Streamed items must be bytes or str, not %s" % type(item).__name__
                    error = make_error(message, MARSHAL_ERROR, [], self.request_id)
                    close = getattr(self.items, "close", None)
                    if close is not None:
                        close()
                    log_error(error)
                    return None, error
                if item:
                    return item, None
                continue
            log_error(error)
            return None, error


def invoke(handler, request_id, event, deadline_ms, arn, trace_id, client_context, cognito):
    """Run one invocation. Returns (payload, None) or (None, error dict).

    payload is ASCII JSON text (str), bytes when the handler returned bytes (sent as-is), or a
    StreamedResponse when it returned an iterator (a generator): streamed item by item.
    """
    global _current_request_id, _current_trace_id
    _current_request_id = request_id
    if trace_id != _current_trace_id:
        _current_trace_id = trace_id
        if trace_id:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id
        else:
            os.environ.pop("_X_AMZN_TRACE_ID", None)
    try:
        if client_context:
            client_context = ClientContext(_parse_json_field(client_context, "Client Context"))
        else:
            client_context = None
        identity = CognitoIdentity(cognito and _parse_json_field(cognito, "Cognito Identity"))
        context = LambdaContext(request_id, deadline_ms or 0, arn, client_context, identity)
        result = handler(event, context)
    except Fault as e:
        error = make_error(e.message, e.error_type, e.stack_trace, request_id)
        log_error(error)
        return None, error
    except Exception as e:
        error = error_from_exception(e, request_id)
        log_error(error)
        return None, error
    if result.__class__ is bytes:
        return result, None
    if hasattr(result.__class__, "__next__"):
        return StreamedResponse(result, context, request_id), None
    try:
        return _encode(result), None
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        error = make_error("Unable to marshal response: %s" % e, MARSHAL_ERROR, [], request_id)
        log_error(error)
        return None, error


def unmarshal_error(exc, request_id):
    error = make_error("Unable to unmarshal input: %s" % exc, UNMARSHAL_ERROR, [], request_id)
    log_error(error)
    return error


# ----------------------------------------------------------------------------- HTTP


headers_count_max = 100
header_line_bytes_max = 65536
_HEADERS_END = (b"\r\n", b"\n", b"")


def connect_api_socket(timeout):
    """A socket connected to this instance's own Unix socket for the Runtime API, or None: none
    was given, or connecting failed, in which case this and every later connection use
    AWS_LAMBDA_RUNTIME_API over TCP (the server serves the instance on both)."""
    global API_SOCKET
    if not API_SOCKET.startswith("@"):
        return None
    address = b"\0" + API_SOCKET[1:].encode().ljust(ABSTRACT_ADDRESS_BYTES, b"\0")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if isinstance(timeout, (int, float)):
            sock.settimeout(timeout)
        sock.connect(address)
        sock.settimeout(None)
        return sock
    except (OSError, ValueError) as e:
        sock.close()
        debug("Runtime API socket %s unusable (%s), using %s" % (API_SOCKET, e, API_ADDRESS))
        API_SOCKET = ""
        return None


_connection_class = None


def _runtime_connection_class():
    """The HTTP client's connection class, defined on first use (it extends http.client's)."""
    global _connection_class
    if _connection_class is not None:
        return _connection_class
    _http_client()

    class RuntimeResponse(http.client.HTTPResponse):
        """http.client's response with a lean header parser.

        The stock begin() runs the email package's feed parser and a dozen lookups per
        response (most of the runtime's CPU per invocation); the Runtime API sends a few
        plain headers, so they are read into a dict keyed by lower-case name (`msg`).
        Sets the same state the stock begin() sets, so read() and keep-alive work unchanged.
        """

        def begin(self):
            if self.headers is not None:
                return
            readline = self.fp.readline
            while True:
                line = readline(header_line_bytes_max + 1)
                if not line:
                    raise http.client.RemoteDisconnected("Runtime API closed the connection")
                if len(line) > header_line_bytes_max:
                    raise http.client.LineTooLong("status line")
                parts = line.split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
                    raise http.client.BadStatusLine(line.decode("latin-1"))
                status = int(parts[1])
                headers = {}
                while True:
                    line = readline(header_line_bytes_max + 1)
                    if line in _HEADERS_END:
                        break
                    if len(line) > header_line_bytes_max:
                        raise http.client.LineTooLong("header line")
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                    if len(headers) > headers_count_max:
                        raise http.client.HTTPException("got more than %d headers" % headers_count_max)
                if status != 100:
                    break
            self.code = self.status = status
            self.reason = parts[2].strip().decode("latin-1") if len(parts) > 2 else ""
            self.version = 11 if parts[0] != b"HTTP/1.0" else 10
            self.headers = self.msg = headers
            self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            self.chunk_left = None
            length = headers.get("content-length")
            self.length = int(length) if length and not self.chunked else None
            if status == 204 or status == 304 or status < 200 or self._method == "HEAD":
                self.length = 0
            connection = headers.get("connection", "").lower()
            self.will_close = (
                "close" in connection
                or (self.version == 10 and "keep-alive" not in connection)
                or (not self.chunked and self.length is None)
            )

    class RuntimeConnection(http.client.HTTPConnection):
        """The one keep-alive connection to the Runtime API: the instance's Unix socket when it has
        one, else TCP with Nagle disabled."""

        response_class = RuntimeResponse

        def connect(self):
            sock = connect_api_socket(self.timeout)
            if sock is not None:
                self.sock = sock
                return
            super().connect()
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send_output(self, message_body=None, encode_chunked=False):
            # The stock version sends headers and body in two writes, hence two segments
            # with TCP_NODELAY; one write lets the server read a whole request at once.
            if message_body.__class__ is not bytes:
                return super()._send_output(message_body, encode_chunked)
            self._buffer.extend((b"", message_body))
            request = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(request)

    _connection_class = RuntimeConnection
    return RuntimeConnection


def _round_trip(conn, method, path, body, content_type, error_type):
    """One request/response; reconnects when the keep-alive connection was dropped."""
    delay = request_backoff_first_s
    for attempt in range(request_attempts_max):
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            if body is not None:
                conn.putheader("Content-Type", content_type)
                conn.putheader("Content-Length", str(len(body)))
                if error_type is not None:
                    conn.putheader("Lambda-Runtime-Function-Error-Type", error_type)
            conn.endheaders(body)
            response = conn.getresponse()
            return response, response.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            if attempt == request_attempts_max - 1:
                raise
            # The first retry is immediate: a stale keep-alive connection is the usual cause.
            if attempt > 0:
                debug("Runtime API request failed (%s), retrying" % e)
                time.sleep(delay)
                delay = min(delay * 2, request_backoff_max_s)
    raise AssertionError("unreachable")


ERROR_TYPE_TRAILER = b"Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = b"Lambda-Runtime-Function-Error-Body"


def stream_http(conn, path, streamed):
    """Send a streamed response as a chunked /response in streaming mode, each item as it is
    produced; a failure mid-stream goes in the error trailers. Returns (response, reply), or
    (None, error) when the handler failed before its first item (posted as /error). Never
    retried: a stream cannot be replayed."""
    chunk, error = streamed.next_chunk()
    if error is not None:
        return None, error
    conn.putrequest("POST", path, skip_accept_encoding=True)
    conn.putheader("Content-Type", streamed.content_type())
    conn.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Trailer", (ERROR_TYPE_TRAILER + b", " + ERROR_BODY_TRAILER).decode())
    conn.endheaders()
    send = conn.send
    while chunk is not None:
        send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        chunk, error = streamed.next_chunk()
    trailers = b""
    if error is not None:
        error_type = error["errorType"].encode("ascii", "replace").replace(b"\r", b"").replace(b"\n", b"")
        body = base64.b64encode(json.dumps(error).encode())
        trailers = b"%s: %s\r\n%s: %s\r\n" % (ERROR_TYPE_TRAILER, error_type, ERROR_BODY_TRAILER, body)
    send(b"0\r\n" + trailers + b"\r\n")
    response = conn.getresponse()
    return response, response.read()


def run_http(handler):
    """Serve invocations over the AWS Runtime API until the process is killed."""
    conn = _runtime_connection_class()(API_ADDRESS)
    next_path = API_PREFIX + "/invocation/next"
    invocation_prefix = API_PREFIX + "/invocation/"
    loads = json.loads
    refusals = 0
    while True:
        response, body = _round_trip(conn, "GET", next_path, None, None, None)
        headers = response.msg
        request_id = headers.get("lambda-runtime-aws-request-id")
        if response.status != 200 or not request_id:
            # A Runtime API that keeps refusing this instance will not change its mind.
            refusals += 1
            sys.stderr.write("Runtime API /next returned %d: %r\n" % (response.status, body[:200]))
            if refusals >= request_attempts_max:
                raise http.client.HTTPException("/next refused %d times" % refusals)
            time.sleep(request_backoff_first_s * refusals)
            continue
        refusals = 0
        deadline = headers.get("lambda-runtime-deadline-ms")
        try:
            event = loads(body) if body else {}
        except ValueError as e:
            payload, error = None, unmarshal_error(e, request_id)
        else:
            payload, error = invoke(
                handler,
                request_id,
                event,
                int(deadline) if deadline and deadline.isdigit() else 0,
                headers.get("lambda-runtime-invoked-function-arn"),
                headers.get("lambda-runtime-trace-id"),
                headers.get("lambda-runtime-client-context"),
                headers.get("lambda-runtime-cognito-identity"),
            )
        streamed = payload.__class__ is StreamedResponse
        if streamed:
            path = invocation_prefix + request_id + "/response"
            try:
                response, reply = stream_http(conn, path, payload)
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                sys.stderr.write("Runtime API stream for %s failed: %s\n" % (request_id, e))
                continue
            if response is None:
                # Failed before its first item: an ordinary /error.
                streamed, payload, error = False, None, reply
        if streamed:
            pass
        elif error is None:
            if payload.__class__ is str:
                body, content_type = payload.encode(), "application/json"
            else:
                body, content_type = payload, "application/unknown"
            path = invocation_prefix + request_id + "/response"
            response, reply = _round_trip(conn, "POST", path, body, content_type, None)
        else:
            path = invocation_prefix + request_id + "/error"
            body = json.dumps(error).encode()
            error_type = error["errorType"]
            response, reply = _round_trip(conn, "POST", path, body, "application/json", error_type)
        if response.status != 202:
            status = response.status
            sys.stderr.write("Runtime API %s returned %d: %r\n" % (path, status, reply[:200]))


# ----------------------------------------------------------------------------- startup


class LambdaLogHandler(logging.Handler):
    """Root handler printing `[LEVEL]\\t<time>\\t<request id>\\t<message>` like AWS's."""

    def emit(self, record):
        try:
            record.aws_request_id = _current_request_id
            # One logging call is one log event: its newlines become \r, as AWS's runtime does.
            sys.stdout.write(self.format(record).replace("\n", "\r") + "\n")
        except Exception:
            self.handleError(record)


class JsonLogFormatter(logging.Formatter):
    """AWS's JSON log record (LoggingConfig.LogFormat JSON): timestamp, level, message,
    logger, requestId, and errorType/errorMessage/stackTrace for an exception."""

    def format(self, record):
        entry = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + "Z",
            "level": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "requestId": getattr(record, "aws_request_id", ""),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["errorType"] = record.exc_info[0].__name__
            entry["errorMessage"] = str(record.exc_info[1])
            entry["stackTrace"] = traceback.format_tb(record.exc_info[2])
        return json.dumps(entry, default=str)


# AWS_LAMBDA_LOG_LEVEL (AWS's names) to Python's levels: TRACE has no equivalent and maps
# to DEBUG, FATAL to CRITICAL.
JSON_LOG_LEVELS = {
    "TRACE": logging.DEBUG,
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "ERROR": logging.ERROR,
    "FATAL": logging.CRITICAL,
}


def setup_logging():
    logging.Formatter.converter = time.gmtime
    handler = LambdaLogHandler()
    root = logging.getLogger()
    if os.environ.get("AWS_LAMBDA_LOG_FORMAT") == "JSON":
        handler.setFormatter(JsonLogFormatter())
        level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
        root.setLevel(JSON_LOG_LEVELS.get(level, logging.INFO))
    else:
        handler.setFormatter(
            logging.Formatter(
                "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
                "%Y-%m-%dT%H:%M:%S",
            )
        )
    root.addHandler(handler)


def setup_sys_path():
    # The task root goes first; the runtime's own directory is dropped so that a user
    # module named like one of ours (e.g. `bootstrap`) is the one that gets imported.
    runtime_dir = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != runtime_dir]
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path.insert(0, task_root)


def _on_sigterm(signum, frame):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


def _websocket_loop():
    """Returns the WebSocket module's `run`, or None when LAMBDA_WS_CLIENT=library asks for
    the websockets package and it is missing (the default client is built in)."""
    if os.environ.get("LAMBDA_WS_CLIENT", "").lower() == "library":
        try:
            import websockets.sync.client  # noqa: F401  (only probing availability)
        except ImportError:
            print("WebSocket unavailable (websockets package not found), falling back to HTTP")
            return None
    return (_websocket_module or _load_websocket_module()).run


def _load_websocket_module():
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bootstrap-websocket.py")
    spec = importlib.util.spec_from_file_location("_lambda_bootstrap_websocket", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _RUNTIME_FILES.add(module.run.__code__.co_filename)
    global _websocket_module
    _websocket_module = module
    return module


# ----------------------------------------------------------------------------- fork template

FORK_CONTROL_VAR = "_LAMBDA_FORK_CONTROL_FD"
# An instance's start message is its environment as JSON (AWS caps a function's own variables
# at 4 KB; the rest is the server's): far below this.
START_MESSAGE_BYTES_MAX = 256 * 1024
# A fork request is `{}` with one descriptor: the child's start/status socket.
FORK_REQUEST_BYTES_MAX = 4096

_websocket_module = None


def _threads():
    """Threads of this process, including ones a C extension started behind Python's back."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _template_reply(control, message, fds=()):
    socket.send_fds(control, [json.dumps(message).encode()], list(fds))


def template_refuses(control_fd, reason):
    """Tell the server this process cannot be a template (it starts the instance normally)."""
    control = socket.socket(fileno=control_fd)
    try:
        _template_reply(control, {"refused": reason})
    except OSError:
        pass
    control.close()


def serve_template(control_fd):
    """Fork one child per request of the server; returns only in a child, once the server has
    started it as an instance, which then serves invocations as an ordinary runtime. The
    template itself never serves: it waits on the control socket (a SOCK_SEQPACKET whose end is
    the server's) and on its children's pidfds, reaping each child and writing its wait status
    to the child's status socket for the server."""
    import threading

    control = socket.socket(fileno=control_fd)
    if threading.active_count() > 1 or _threads() > 1:
        # fork() copies only the calling thread: locks held by the others would stay held.
        _template_reply(control, {"refused": "the handler module started threads"})
        control.close()
        sys.exit(0)
    # What the init allocated moves to the collector's permanent generation: a fork's collections
    # then never walk (and so never copy-on-write) the pages it shares with the template.
    import gc

    # Loaded here, once, for every fork's `_prefault` (an import in each fork would cost more
    # than it saves).
    try:
        _prefault_setup()
    except Exception:
        pass
    # And what a fork's first Runtime API connection needs, loaded once here instead of in every
    # fork: a TCP connection's getaddrinfo encodes the host with the "idna" codec (its first use
    # imports encodings.idna, stringprep and unicodedata, 1.5-6 ms measured in a fork), and the
    # WebSocket handshake's SHA-1.
    import encodings.idna  # noqa: F401

    if _websocket_module is not None:
        _websocket_module.prewarm()
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    # The output pipe is the first instance's: the template's init output goes there (as AWS puts
    # init logs in the first instance's stream); from now on the template writes nothing.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    _template_reply(control, {"ready": True})
    children = {}  # pidfd -> (pid, status socket)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd != control.fileno():
                pid, status_socket = children.pop(fd)
                poller.unregister(fd)
                _, status = os.waitpid(pid, 0)
                try:
                    status_socket.send(struct.pack("<i", status))
                except OSError:
                    pass
                status_socket.close()
                os.close(fd)
                continue
            try:
                message, fds, _, _ = socket.recv_fds(control, FORK_REQUEST_BYTES_MAX, 1)
            except OSError:
                os._exit(0)
            if not message:
                # The server dropped this template (code change, delete, shutdown).
                os._exit(0)
            if len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                _template_reply(control, {"error": "a fork request carries 1 descriptor"})
                continue
            status_fd = fds[0]
            try:
                pid = os.fork()
            except OSError as e:
                os.close(status_fd)
                _template_reply(control, {"error": "fork: %s" % e})
                continue
            if pid == 0:
                try:
                    _become_instance(control, children, status_fd)
                except BaseException:
                    os._exit(1)
                return
            pidfd = os.pidfd_open(pid)
            children[pidfd] = (pid, socket.socket(fileno=status_fd))
            poller.register(pidfd, select.POLLIN)
            try:
                _template_reply(control, {"pid": pid}, [pidfd])
            except OSError:
                os._exit(0)


def _take_environment(env, replace=True):
    """Makes `env` this process's environment (over what it has unless `replace`), and
    everything read from it at import."""
    global API_ADDRESS, API_SOCKET, DEBUG, FUNCTION_VERSION
    if replace:
        os.environ.clear()
    os.environ.update(env)
    API_ADDRESS = env.get("AWS_LAMBDA_RUNTIME_API") or API_ADDRESS
    API_SOCKET = os.environ.get("LAMBDA_RUNTIME_API_SOCKET", "")
    DEBUG = bool(env.get("LAMBDA_RUNTIME_DEBUG"))
    FUNCTION_VERSION = env.get("AWS_LAMBDA_FUNCTION_VERSION") or "$LATEST"
    for attribute, key in (
        ("function_name", "AWS_LAMBDA_FUNCTION_NAME"),
        ("function_version", "AWS_LAMBDA_FUNCTION_VERSION"),
        ("memory_limit_in_mb", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
        ("log_group_name", "AWS_LAMBDA_LOG_GROUP_NAME"),
        ("log_stream_name", "AWS_LAMBDA_LOG_STREAM_NAME"),
    ):
        setattr(LambdaContext, attribute, env.get(key))


# ----------------------------------------------------------------------------- Docker pool slot

SLOT_DIR_VAR = "_LAMBDA_SLOT_DIR"


def await_slot_start(slot_dir):
    """A Docker pool slot (docs/cold-starts-docker.md, "Runtimes started ahead"): this runtime
    was started in a container before any function was assigned to it. Loads what a start would
    load, then blocks on the slot's wake-up FIFO; once woken, the function's code is mounted on
    /var/task and `start.json` in the slot dir holds the instance's environment, set over this
    process's (the image's variables and the container's HOSTNAME stay, as in an ordinary
    start, and every variable the slot was started with is in it). PYTHONPATH is read when the interpreter starts, so its entries in sys.path
    are replaced by the instance's. Returns only once this process is the instance; exits when
    the slot is dropped unused."""
    # Both transports' clients: which one the instance uses comes with its environment.
    _load_websocket_module()
    _runtime_connection_class()
    started_with = [p for p in os.environ.get("PYTHONPATH", "").split(":") if p]
    with open(os.path.join(slot_dir, "go"), "rb", buffering=0) as go:
        if not go.readline():
            os._exit(0)
    with open(os.path.join(slot_dir, "start.json"), "rb") as f:
        message = f.read(START_MESSAGE_BYTES_MAX + 1)
    if len(message) > START_MESSAGE_BYTES_MAX:
        raise SystemExit("start message too large")
    env = json.loads(message)["env"]
    _take_environment(env, replace=False)
    rest = sys.path[1:]
    for entry in started_with:
        if entry in rest:
            rest.remove(entry)
    wanted = [p for p in env.get("PYTHONPATH", "").split(":") if p]
    sys.path[:] = sys.path[:1] + wanted + rest
    os.chdir(env.get("LAMBDA_TASK_ROOT") or "/var/task")
    # An ordinary start's shell exports the working directory.
    os.environ["PWD"] = os.getcwd()
    time.tzset()


# Pages a fork shares with its template are copied on their first write, and Python writes a
# reference count on every object it touches: about 730 copy-on-write faults (2.5-3.5 ms on the
# test VM) between a forked instance's start and its first /next. A fork that waits for its
# start (a spare) copies the template's pages ahead instead (`_prefault`), so the start does not
# pay for them; the instance then holds its own copy of the template's memory, as an ordinary
# start does. Only once the server says it moved the fork into its own cgroup (the copies are
# charged to the cgroup that makes them), and never past the arrival of the start message: it
# checks between mappings and between pieces of at most `PREFAULT_PIECE_BYTES`. A template
# larger than half the function's memory stays shared (the copies count against the instance's
# memory limit).
MADV_POPULATE_WRITE = 23
PREFAULT_PIECE_BYTES = 2 * 1024 * 1024
_madvise = None


def _prefault_setup():
    """Loads madvise and checks once that this kernel has MADV_POPULATE_WRITE (5.14+)."""
    global _madvise
    import ctypes
    import mmap

    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    # One page inside a buffer of two, on this process's heap (private and writable).
    buffer = ctypes.create_string_buffer(2 * mmap.PAGESIZE)
    page = (ctypes.addressof(buffer) + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    works = madvise(page, mmap.PAGESIZE, MADV_POPULATE_WRITE) == 0
    if works:
        _madvise = madvise


def _present_runs(maps_line, pagemap, page_bytes):
    """(address, bytes) of each run of present pages in the mapping of one /proc/self/maps
    line, if it is private and writable: the pages a fork shares with its template."""
    import array

    fields = maps_line.split()
    perms = fields[1]
    if perms[1] != "w" or perms[3] != "p":
        return []
    start, end = (int(x, 16) for x in fields[0].split("-"))
    pages = (end - start) // page_bytes
    pagemap.seek(start // page_bytes * 8)
    entries = array.array("Q")
    entries.frombytes(pagemap.read(pages * 8))
    runs, run = [], None
    for i, entry in enumerate(entries):
        if entry >> 63:
            if run is None:
                run = i
        elif run is not None:
            runs.append((start + run * page_bytes, (i - run) * page_bytes))
            run = None
    if run is not None:
        runs.append((start + run * page_bytes, (len(entries) - run) * page_bytes))
    return runs


def _opted_out(value):
    return (value or "").strip().lower() in ("false", "0", "no", "off")


def _prefault(go):
    """In a fork waiting for its start, moved into its own cgroup: copies the pages it shares
    with the template, and stops as soon as its start message is there (`go` readable)."""
    if _madvise is None or _opted_out(os.environ.get("LAMBDA_FORK_PREFAULT")):
        return
    import mmap

    poller = select.poll()
    poller.register(go, select.POLLIN)
    try:
        with open("/proc/self/maps") as f:
            maps = f.readlines()
        limit_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or 0)
        runs = []
        with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
            for line in maps:
                if poller.poll(0):
                    return
                runs.extend(_present_runs(line, pagemap, mmap.PAGESIZE))
        if limit_mb and sum(n for _, n in runs) > limit_mb * 1024 * 1024 // 2:
            return
        for address, length in runs:
            for offset in range(0, length, PREFAULT_PIECE_BYTES):
                if poller.poll(0):
                    return
                _madvise(address + offset, min(PREFAULT_PIECE_BYTES, length - offset),
                         MADV_POPULATE_WRITE)
    except (OSError, ValueError):
        pass


def _become_instance(control, children, status_fd):
    """In a fresh child of the template: drop the template's descriptors, then wait until the
    server starts this child as an instance (it moves it into the instance's cgroup first, and
    may keep it waiting as a spare for the next start): the start message on the status socket
    carries the instance's environment and, attached, its output pipe."""
    control.close()
    for pidfd, (_, status_socket) in children.items():
        status_socket.close()
        os.close(pidfd)
    os.setpgid(0, 0)
    go = socket.socket(fileno=status_fd)
    # One byte once the server has moved this fork into its own cgroup (nothing: dropped).
    if go.recv(1) != b"m":
        os._exit(0)
    _prefault(go)
    message, fds, _, _ = socket.recv_fds(go, START_MESSAGE_BYTES_MAX, 1)
    if not message or len(fds) != 1:
        # The server dropped this spare (or its template) without starting it.
        os._exit(0)
    env = json.loads(message)["env"]
    os.dup2(fds[0], 1)
    os.dup2(fds[0], 2)
    os.close(fds[0])
    go.close()
    _take_environment(env)
    # Every fork would otherwise draw the same numbers as its siblings. `random` reseeds itself
    # at fork (os.register_at_fork); reseeding again costs nothing and covers older Pythons.
    if "random" in sys.modules:
        sys.modules["random"].seed()
    if _websocket_module is not None:
        _websocket_module.after_fork()


def main():
    signal.signal(signal.SIGTERM, _on_sigterm)
    if not os.environ.get("PYTHONUNBUFFERED"):
        sys.stdout.reconfigure(line_buffering=True)
    slot_dir = os.environ.pop(SLOT_DIR_VAR, None)
    if slot_dir:
        await_slot_start(slot_dir)
    control_fd = os.environ.pop(FORK_CONTROL_VAR, None)
    control_fd = int(control_fd) if control_fd and control_fd.isdigit() else None
    use_websocket = os.environ.get("LAMBDA_USE_WEBSOCKET", "true").lower() != "false"
    if not use_websocket:
        # HTTP only: its client loads before the function's code is on the module path (in a
        # fork template, once for all its forks).
        _runtime_connection_class()
    setup_sys_path()
    setup_logging()
    try:
        handler = load_handler(os.environ.get("_HANDLER", ""))
    except Fault as e:
        error = make_error(e.message, e.error_type, e.stack_trace)
    except Exception as e:
        error = error_from_exception(e)
    else:
        error = None
    if error is not None:
        log_error(error)
        if control_fd is not None:
            # The server starts this instance normally, which reports the init error.
            template_refuses(control_fd, "init error: %s" % error["errorType"])
            sys.exit(1)
        report_init_error(error)
        sys.exit(1)

    run_websocket = None
    if use_websocket:
        run_websocket = _websocket_loop()
    if run_websocket is None:
        # The HTTP client (the websockets package asked for is missing): loaded now, in a fork
        # template once for all its forks.
        _runtime_connection_class()
    if control_fd is not None:
        serve_template(control_fd)
    if run_websocket is not None:
        reason = run_websocket(sys.modules[__name__], handler)
        print("WebSocket connection failed (%s), falling back to HTTP" % reason)
    try:
        run_http(handler)
    except _http_errors() as e:
        sys.stderr.write("Runtime API at %s unusable (%s), exiting\n" % (API_ADDRESS, e))
        sys.exit(1)


_RUNTIME_FILES = {main.__code__.co_filename}

if __name__ == "__main__":
    main()
