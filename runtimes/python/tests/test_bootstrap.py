"""End-to-end tests of the Python runtime against mock Runtime API servers on 127.0.0.1.

Each test starts `bootstrap.py` as a child process with the environment the server gives
an instance, drives it through a mock HTTP Runtime API (http.server) or a mock WebSocket
Runtime API (websockets, when importable), and kills it afterwards.
WebSocket tests need `websockets>=11` importable by this process (e.g. PYTHONPATH).
"""

import base64
import hashlib
import http.server
import importlib.util
import json
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import urllib.parse
import time
import unittest

RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOTSTRAP = os.path.join(RUNTIME_DIR, "bootstrap.py")
WAIT_S = 5.0

try:
    import websockets
    import websockets.sync.server

    WEBSOCKETS_PATH = os.path.dirname(os.path.dirname(os.path.abspath(websockets.__file__)))
except ImportError:
    websockets = None
    WEBSOCKETS_PATH = None

NEEDS_WEBSOCKETS = unittest.skipIf(
    websockets is None,
    "websockets>=11 is not importable; run runtimes/install-deps.sh runtimes/.deps "
    "and set PYTHONPATH=runtimes/.deps/python",
)

USER_CODE = {
    "app.py": """
        import logging
        import time

        def echo(event, context):
            return {"echo": event}

        def loaded(event, context):
            import sys
            return {name: name in sys.modules for name in event}

        def context_fields(event, context):
            print("plain print line")
            logging.getLogger().warning("logged %s", "warning")
            return {
                "aws_request_id": context.aws_request_id,
                "function_name": context.function_name,
                "function_version": context.function_version,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "client_context_custom": context.client_context and context.client_context.custom,
                "client_app_title": (
                    context.client_context and context.client_context.client.app_title
                ),
                "cognito_identity_id": context.identity.cognito_identity_id,
                "remaining_ms": context.get_remaining_time_in_millis(),
            }

        def fail(event, context):
            raise ValueError("bad input: %s" % event.get("n"))

        def unserializable(event, context):
            return {"values": {1, 2}}

        def raw_bytes(event, context):
            return b"not json \\xff" + b"z" * event.get("pad", 0)
        """,
    "stream.py": """
        import time

        def chunks(event, context):
            context.response_content_type = "text/plain"
            yield "first;"
            time.sleep(event.get("pause", 0.3))
            yield b"second:" + context.aws_request_id.encode()

        def fails(event, context):
            yield "partial"
            raise KeyError("mid-stream")

        def fails_early(event, context):
            raise KeyError("before")
            yield "never"

        def wrong_item(event, context):
            yield 42

        def empty(event, context):
            return iter(())
        """,
    "pkg/__init__.py": "",
    "pkg/mod.py": """
        def handler(event, context):
            return "dotted"
        """,
    # A function whose own modules are named like ones the runtime's HTTP client imports.
    "shadow/email.py": """
        VALUE = "the function's own email module, not a package"
        """,
    "shadow/app.py": """
        def echo(event, context):
            return {"echo": event}
        """,
    "src/app.py": """
        def handler(event, context):
            return "slashed"
        """,
    "broken.py": """
        def handler(event, context)
            return 1
        """,
    "threaded.py": """
        import threading, time
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()

        def handler(event, context):
            return "threaded"
        """,
    "forked.py": """
        import os, random, time
        INIT_PID = os.getpid()

        def handler(event, context):
            print("fork says %s" % event.get("tag"))
            return {
                "pid": os.getpid(),
                "init_pid": INIT_PID,
                "stream": context.log_stream_name,
                "rand": random.random(),
            }
        """,
    # Shadows any installed websockets so that its absence is tested whatever the host has.
    "no-websockets/websockets/__init__.py": """
        raise ImportError("No module named 'websockets'")
        """,
}


def setUpModule():
    global CODE_DIR
    CODE_DIR = tempfile.mkdtemp(prefix="lambda-py-runtime-test-")
    for relative, text in USER_CODE.items():
        path = os.path.join(CODE_DIR, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))


def tearDownModule():
    shutil.rmtree(CODE_DIR, ignore_errors=True)


# ----------------------------------------------------------------------------- mocks


class MockRuntimeApi:
    """AWS Runtime API 2018-06-01 on an ephemeral port, recording what the runtime sends."""

    def __init__(self):
        self.invocations = queue.Queue()
        self.posted = queue.Queue()
        # request id -> {"pieces": [(time, bytes)], "trailers": {name: value}} of a chunked post
        self.streams = {}
        self.client_ports = []
        self.websocket_attempts = 0
        self.drop_after_post = False
        self.stopping = False
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                api.client_ports.append(self.client_address[1])
                if self.path.startswith("/2018-06-01/runtime/websocket"):
                    api.websocket_attempts += 1
                    self._reply(404, b'{"message":"not found"}')
                elif self.path == "/2018-06-01/runtime/invocation/next":
                    self._next()
                else:
                    self._reply(404, b"{}")

            def do_POST(self):
                api.client_ports.append(self.client_address[1])
                stream = None
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    stream = self._read_chunked()
                    body = b"".join(data for _, data in stream["pieces"])
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                parts = self.path.split("/")
                if stream is not None and len(parts) == 6:
                    api.streams[parts[4]] = stream
                if self.path == "/2018-06-01/runtime/init/error":
                    api.posted.put(("init_error", None, dict(self.headers), body))
                elif len(parts) == 6 and parts[3] == "invocation":
                    api.posted.put((parts[5], parts[4], dict(self.headers), body))
                else:
                    self._reply(404, b"{}")
                    return
                self._reply(202, b'{"status":"OK"}')
                if api.drop_after_post:
                    # Drop the keep-alive connection without announcing it.
                    self.close_connection = True

            def _read_chunked(self):
                """A chunked body: each chunk with when it arrived, then the trailers."""
                pieces, trailers = [], {}
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        break
                    data = self.rfile.read(size)
                    self.rfile.read(2)
                    pieces.append((time.time(), data))
                while True:
                    line = self.rfile.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    trailers[name.strip().lower()] = value.strip()
                return {"pieces": pieces, "trailers": trailers}

            def _next(self):
                while not api.stopping:
                    try:
                        request_id, event, headers = api.invocations.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Lambda-Runtime-Aws-Request-Id", request_id)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(event)))
                    self.end_headers()
                    self.wfile.write(event)
                    return

            def _reply(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A killed child resets its connection; that is expected, not worth a traceback.
        self.server.handle_error = lambda request, client_address: None
        self.address = "127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def invoke(self, request_id, event, **headers):
        deadline = str(int(time.time() * 1000) + 30000)
        base = {"Lambda-Runtime-Deadline-Ms": deadline}
        base.update(headers)
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        self.invocations.put((request_id, body, base))

    def wait_posted(self):
        return self.posted.get(timeout=WAIT_S)

    def close(self):
        self.stopping = True
        self.server.shutdown()
        self.server.server_close()


class MockWebSocketApi:
    """WebSocket Runtime API: hands each connection and its register message to the test.
    With `take_header_registration`, it answers an upgrade that carries
    `Lambda-Runtime-Instance-Id` with `Lambda-Runtime-Registered: true`, as our server does, and
    hands over the registration the headers made instead of a message."""

    def __init__(self, take_header_registration=False):
        self.accepted = queue.Queue()
        self.release = threading.Event()
        self.take_header_registration = take_header_registration
        self.server = websockets.sync.server.serve(
            self._handle,
            "127.0.0.1",
            0,
            compression=None,
            process_response=self._process_response,
        )
        self.address = "127.0.0.1:%d" % self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _by_header(self, request):
        return self.take_header_registration and "Lambda-Runtime-Instance-Id" in request.headers

    def _process_response(self, connection, request, response):
        if self._by_header(request):
            response.headers["Lambda-Runtime-Registered"] = "true"
        return response

    def _handle(self, connection):
        request = connection.request
        if self._by_header(request):
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
            register = {
                "type": "register",
                "function_name": query["fn"][0],
                "runtime": request.headers["Lambda-Runtime-Name"],
                "version": request.headers["Lambda-Runtime-Function-Version"],
                "instance_id": request.headers["Lambda-Runtime-Instance-Id"],
                "by_header": True,
            }
        else:
            register = json.loads(connection.recv(timeout=WAIT_S))
        self.accepted.put((connection, request.path, register))
        self.release.wait(30)

    def accept(self):
        return self.accepted.get(timeout=WAIT_S)

    def close(self):
        self.release.set()
        self.server.shutdown()


class Decoded(dict):
    """A received message; `envelope` says whether it came as a binary envelope."""

    envelope = False


def decode_message(message):
    """A text message as JSON; a binary envelope as its header plus the parsed payload."""
    if isinstance(message, str):
        return Decoded(json.loads(message))
    header_bytes = struct.unpack("!I", message[:4])[0]
    decoded = Decoded(json.loads(message[4 : 4 + header_bytes]))
    raw = message[4 + header_bytes :]
    if raw or decoded.get("type") == "response":
        try:
            decoded["payload"] = json.loads(raw)
        except ValueError:
            decoded["payload_bytes"] = raw
    decoded.envelope = True
    return decoded


def load_websocket_module():
    path = os.path.join(RUNTIME_DIR, "bootstrap-websocket.py")
    spec = importlib.util.spec_from_file_location("bootstrap_websocket_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WS = load_websocket_module()


def naive_mask(data, key):
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def server_frame(opcode, payload, fin=True, masked=False):
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if masked:
        return head + b"\0\0\0\0" + payload
    return head + payload


class RawConnection:
    """Server side of one upgraded connection, framing written from RFC 6455 (no library)."""

    def __init__(self, sock, rest):
        self.sock = sock
        self.data = rest

    def _need(self, n):
        while len(self.data) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("client closed")
            self.data += chunk

    def read_frame(self):
        """(fin, opcode, unmasked payload, masked, length form 7/16/64)."""
        self._need(2)
        b0, b1 = self.data[0], self.data[1]
        n, at, form = b1 & 0x7F, 2, 7
        if n == 126:
            self._need(4)
            n, at, form = struct.unpack("!H", self.data[2:4])[0], 4, 16
        elif n == 127:
            self._need(10)
            n, at, form = struct.unpack("!Q", self.data[2:10])[0], 10, 64
        masked = bool(b1 & 0x80)
        self._need(at + (4 if masked else 0) + n)
        key = self.data[at : at + 4] if masked else b"\0\0\0\0"
        at += 4 if masked else 0
        payload = naive_mask(self.data[at : at + n], key)
        self.data = self.data[at + n :]
        return bool(b0 & 0x80), b0 & 0x0F, payload, masked, form

    def read_data(self):
        """The next text (str) or binary (bytes) message, skipping nothing else."""
        fin, opcode, payload, masked, _ = self.read_frame()
        assert fin and masked, (fin, masked)
        return payload.decode() if opcode == 1 else payload

    def send(self, data):
        self.sock.sendall(data)


class RawServer:
    """A WebSocket server on 127.0.0.1 from RFC 6455: each upgrade gets `reply(accept, n)`'s
    head (default a correct 101; n counts upgrades from 1), then `script(RawConnection)`."""

    def __init__(self, script, reply=None):
        self.script = script
        self.reply = reply
        self.upgrades = 0
        self.heads = []
        self.errors = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        with sock:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            keys = [
                line.split(":", 1)[1].strip()
                for line in head.decode("latin-1").split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            ]
            if not keys:
                # Not an upgrade (e.g. the runtime's HTTP /next after it fell back): not counted.
                return
            self.upgrades += 1
            self.heads.append(head.decode("latin-1"))
            key = keys[0]
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            if self.reply is not None:
                response = self.reply(accept, self.upgrades)
            else:
                response = None
            if response is None:
                response = (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept
                )
            sock.sendall(response.encode())
            if not response.startswith("HTTP/1.1 101"):
                return
            try:
                self.script(RawConnection(sock, rest))
            except Exception as e:  # reported to the test through self.errors
                self.errors.append(e)

    def close(self):
        self.listener.close()


# ----------------------------------------------------------------------------- harness


class RuntimeTestCase(unittest.TestCase):
    def setUp(self):
        self.children = []

    def tearDown(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=WAIT_S)

    def spawn(
        self, api_address, handler, use_websocket="true", pythonpath=None, pass_fds=(), **extra
    ):
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": api_address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": CODE_DIR,
            "LAMBDA_RUNTIME_DIR": RUNTIME_DIR,
            "AWS_LAMBDA_FUNCTION_NAME": "my fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/my-fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]abc",
            "AWS_REGION": "local",
            "LAMBDA_USE_WEBSOCKET": use_websocket,
            "LAMBDA_INSTANCE_ID": "instance-7",
            "LAMBDA_RUNTIME_NAME": "python3.11",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        env.update(extra)
        child = subprocess.Popen(
            [sys.executable, BOOTSTRAP],
            cwd=CODE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=pass_fds,
        )
        self.children.append(child)
        return child

    def wait_for_line(self, child, text, wait_s=WAIT_S):
        """Read the child's stdout until a line containing `text` appears."""
        deadline = time.time() + wait_s
        while time.time() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], deadline - time.time())
            if not ready:
                break
            line = child.stdout.readline()
            if text in line:
                return line
            if not line:
                break
        self.fail("%r never printed" % text)

    def http_api(self):
        api = MockRuntimeApi()
        self.addCleanup(api.close)
        return api

    def stop(self, child):
        """Kill the child and return its (stdout, stderr)."""
        child.kill()
        return child.communicate(timeout=WAIT_S)

    def assert_http_invocation(self, api, request_id, event, expected):
        api.invoke(request_id, event)
        kind, posted_id, headers, body = api.wait_posted()
        self.assertEqual((kind, posted_id), ("response", request_id), body)
        self.assertEqual(headers.get("Content-Type"), "application/json")
        self.assertEqual(json.loads(body), expected)


# ----------------------------------------------------------------------------- tests


class InitErrorTests(RuntimeTestCase):
    def assert_init_error(self, handler, error_type, message, **spawn):
        api = self.http_api()
        spawn.setdefault("use_websocket", "false")
        child = self.spawn(api.address, handler, **spawn)
        kind, _, headers, body = api.wait_posted()
        self.assertEqual(kind, "init_error")
        self.assertEqual(headers.get("Lambda-Runtime-Function-Error-Type"), error_type)
        error = json.loads(body)
        self.assertEqual(error["errorType"], error_type)
        self.assertEqual(error["errorMessage"], message)
        self.assertIsInstance(error["stackTrace"], list)
        self.assertEqual(child.wait(WAIT_S), 1)
        return error

    def test_missing_module(self):
        self.assert_init_error(
            "nope.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'nope': No module named 'nope'",
        )

    def test_reported_when_the_function_shadows_a_standard_module(self):
        # The report needs no http.client, whose import the function's email.py would break.
        for use_websocket in ("true", "false"):
            self.assert_init_error(
                "app.missing",
                "Runtime.HandlerNotFound",
                "Handler 'missing' missing on module 'app'",
                use_websocket=use_websocket,
                LAMBDA_TASK_ROOT=os.path.join(CODE_DIR, "shadow"),
            )

    def test_missing_function(self):
        self.assert_init_error(
            "app.missing", "Runtime.HandlerNotFound", "Handler 'missing' missing on module 'app'"
        )

    def test_syntax_error(self):
        error = self.assert_init_error(
            "broken.handler",
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module 'broken': expected ':' (broken.py, line 2)",
        )
        self.assertIn("broken.py", error["stackTrace"][0])

    def test_malformed_handler_name(self):
        self.assert_init_error(
            "nodot",
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        )


class TemplateTests(RuntimeTestCase):
    """The fork-start protocol (docs/cold-starts.md), with this test as the server."""

    def spawn_template(self, handler, address="127.0.0.1:1"):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(ours.close)
        # The template's own address is never used: each fork gets its instance's.
        child = self.spawn(
            address,
            handler,
            use_websocket="false",
            pass_fds=(theirs.fileno(),),
            _LAMBDA_FORK_CONTROL_FD=str(theirs.fileno()),
            AWS_LAMBDA_LOG_STREAM_NAME="template-stream",
        )
        theirs.close()
        ours.settimeout(WAIT_S)
        return child, ours

    def fork(self, control, moved=True):
        """A child of the template: (pid, pidfd, the server's end of its socket). `moved`: tell
        it at once that it is in its own cgroup, as the server does after the move."""
        mine, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        socket.send_fds(control, [b"{}"], [child_end.fileno()])
        child_end.close()
        message, fds, _, _ = socket.recv_fds(control, 4096, 1)
        reply = json.loads(message)
        self.assertIn("pid", reply, reply)
        self.assertEqual(len(fds), 1)
        self.addCleanup(os.close, fds[0])
        self.addCleanup(mine.close)
        self.addCleanup(self.kill_quietly, fds[0])
        if moved:
            mine.send(b"m")
        return reply["pid"], fds[0], mine

    @staticmethod
    def kill_quietly(pidfd):
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass

    def start(self, status_socket, api, stream):
        """Send the start message; returns the read end of the instance's output pipe."""
        env = {
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_FUNCTION_NAME": "my fn",
            "LAMBDA_USE_WEBSOCKET": "false",
        }
        read, write = os.pipe()
        socket.send_fds(status_socket, [json.dumps({"env": env}).encode()], [write])
        os.close(write)
        self.addCleanup(os.close, read)
        return read

    def read_until(self, fd, text):
        seen = b""
        deadline = time.time() + WAIT_S
        while text.encode() not in seen and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.time())
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
        self.assertIn(text, seen.decode())
        return seen.decode()

    def test_forks_serve_with_their_own_environment_and_output(self):
        template, control = self.spawn_template("forked.handler")
        self.assertEqual(json.loads(control.recv(4096)), {"ready": True})
        results = []
        for n in (1, 2):
            api = self.http_api()
            pid, _, status = self.fork(control)
            output = self.start(status, api, "stream-%d" % n)
            api.invoke("req-%d" % n, {"tag": "fork-%d" % n})
            kind, _, _, body = api.wait_posted()
            self.assertEqual(kind, "response", body)
            result = json.loads(body)
            self.assertEqual(result["pid"], pid)
            self.assertEqual(result["init_pid"], template.pid, "the module ran in the template")
            self.assertEqual(result["stream"], "stream-%d" % n)
            seen = self.read_until(output, "fork says fork-%d" % n)
            self.assertNotIn("fork says fork-%d" % (3 - n), seen)
            results.append((result, pid, status))
        self.assertNotEqual(results[0][0]["rand"], results[1][0]["rand"])
        # An ended fork's wait status comes back on its socket.
        _, pid, status = results[0]
        os.kill(pid, signal.SIGKILL)
        status.settimeout(WAIT_S)
        raw = status.recv(4)
        self.assertEqual(os.waitstatus_to_exitcode(struct.unpack("<i", raw)[0]), -signal.SIGKILL)
        # Closing the control socket ends the template.
        control.close()
        self.assertEqual(template.wait(WAIT_S), 0)

    @staticmethod
    def private_dirty_kb(pid):
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1])
        return 0

    def settled_private_dirty_kb(self, pid):
        """The fork's private dirty memory once it stopped growing (its prefault is done)."""
        last, deadline = -1, time.time() + WAIT_S
        while time.time() < deadline:
            now = self.private_dirty_kb(pid)
            if now == last:
                return now
            last = now
            time.sleep(0.2)
        return last

    def test_a_waiting_spare_copies_the_template_s_pages_and_then_serves(self):
        template, control = self.spawn_template("forked.handler")
        self.assertEqual(json.loads(control.recv(4096)), {"ready": True})
        pid, _, status = self.fork(control, moved=False)
        # Not before the server says the fork is in its own cgroup (the copies are charged to
        # the cgroup that makes them).
        time.sleep(0.5)
        before_move = self.settled_private_dirty_kb(pid)
        status.send(b"m")
        copied = self.settled_private_dirty_kb(pid)
        self.assertGreater(copied, before_move + 2048, (copied, before_move))
        # The opted-out template's spare shares them.
        shared_template, shared_control = self.spawn_template_with("forked.handler", "false")
        self.assertEqual(json.loads(shared_control.recv(4096)), {"ready": True})
        shared_pid, _, _ = self.fork(shared_control)
        shared = self.settled_private_dirty_kb(shared_pid)
        self.assertGreater(copied, shared + 2048, (copied, shared))
        # A prefaulted spare serves as any fork.
        api = self.http_api()
        self.start(status, api, "stream-spare")
        api.invoke("req-spare", {"tag": "spare"})
        kind, _, _, body = api.wait_posted()
        self.assertEqual(kind, "response", body)
        self.assertEqual(json.loads(body)["pid"], pid)

    def spawn_template_with(self, handler, prefault):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.addCleanup(ours.close)
        child = self.spawn(
            "127.0.0.1:1",
            handler,
            use_websocket="false",
            pass_fds=(theirs.fileno(),),
            _LAMBDA_FORK_CONTROL_FD=str(theirs.fileno()),
            LAMBDA_FORK_PREFAULT=prefault,
        )
        theirs.close()
        ours.settimeout(WAIT_S)
        return child, ours

    def test_a_spare_dropped_unstarted_exits(self):
        template, control = self.spawn_template("forked.handler")
        self.assertEqual(json.loads(control.recv(4096)), {"ready": True})
        pid, _, status = self.fork(control)
        status.shutdown(socket.SHUT_WR)
        raw = status.recv(4)
        self.assertEqual(os.waitstatus_to_exitcode(struct.unpack("<i", raw)[0]), 0)

    def test_threads_make_the_template_refuse(self):
        template, control = self.spawn_template("threaded.handler")
        reply = json.loads(control.recv(4096))
        self.assertIn("threads", reply.get("refused", ""), reply)
        self.assertEqual(template.wait(WAIT_S), 0)

    def test_an_init_error_is_left_to_the_ordinary_start(self):
        api = self.http_api()
        # Given an address that works, so that a report of its own would be seen.
        template, control = self.spawn_template("nope.handler", api.address)
        reply = json.loads(control.recv(4096))
        self.assertEqual(reply, {"refused": "init error: Runtime.ImportModuleError"})
        self.assertEqual(template.wait(WAIT_S), 1)
        self.assertTrue(api.posted.empty(), "the template reports nothing itself")


class HttpTests(RuntimeTestCase):
    def test_full_loop_on_one_keep_alive_connection(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.echo", use_websocket="false")
        self.assert_http_invocation(api, "req-1", {"a": 1}, {"echo": {"a": 1}})
        self.assert_http_invocation(api, "req-2", b"", {"echo": {}})
        # Wait for the third /next so every request of both invocations is recorded.
        deadline = time.time() + WAIT_S
        while len(api.client_ports) < 5 and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(len(api.client_ports), 5)
        self.assertEqual(len(set(api.client_ports)), 1, "runtime opened more than one connection")
        self.assertIsNone(child.poll())

    def test_the_http_transport_loads_its_client(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.loaded", use_websocket="false")
        self.assert_http_invocation(api, "req-m", ["http.client"], {"http.client": True})
        self.stop(child)

    def test_an_instance_socket_that_does_not_answer_leaves_tcp(self):
        # LAMBDA_RUNTIME_API_SOCKET names an abstract socket nobody listens on: the runtime
        # serves over AWS_LAMBDA_RUNTIME_API, on one connection, as without it.
        api = self.http_api()
        missing = "@lambda-at-home-test/none/%d-%d" % (os.getpid(), time.time_ns())
        child = self.spawn(
            api.address, "app.echo", use_websocket="false", LAMBDA_RUNTIME_API_SOCKET=missing
        )
        self.assert_http_invocation(api, "req-1", {"a": 1}, {"echo": {"a": 1}})
        self.assert_http_invocation(api, "req-2", {"a": 2}, {"echo": {"a": 2}})
        self.assertEqual(len(set(api.client_ports)), 1)
        self.assertIsNone(child.poll())

    def test_reconnects_when_keep_alive_connection_drops(self):
        api = self.http_api()
        api.drop_after_post = True
        child = self.spawn(api.address, "app.echo", use_websocket="false")
        self.assert_http_invocation(api, "req-1", {"a": 1}, {"echo": {"a": 1}})
        self.assert_http_invocation(api, "req-2", {"a": 2}, {"echo": {"a": 2}})
        self.assertGreater(len(set(api.client_ports)), 1)
        self.assertIsNone(child.poll())

    def test_dotted_and_slash_handler_paths(self):
        for handler, expected in (("pkg.mod.handler", "dotted"), ("src/app.handler", "slashed")):
            with self.subTest(handler=handler):
                api = self.http_api()
                child = self.spawn(api.address, handler, use_websocket="false")
                self.assert_http_invocation(api, "req-" + expected, {}, expected)
                self.stop(child)

    def test_exception_error_shape(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.fail", use_websocket="false")
        api.invoke("req-err", {"n": 7})
        kind, posted_id, headers, body = api.wait_posted()
        self.assertEqual((kind, posted_id), ("error", "req-err"))
        self.assertEqual(headers.get("Lambda-Runtime-Function-Error-Type"), "ValueError")
        error = json.loads(body)
        self.assertEqual(error["errorMessage"], "bad input: 7")
        self.assertEqual(error["errorType"], "ValueError")
        self.assertEqual(error["requestId"], "req-err")
        self.assertEqual(len(error["stackTrace"]), 1, error["stackTrace"])
        self.assertRegex(error["stackTrace"][0], r'^  File ".*app\.py", line \d+, in fail\n')
        self.assertNotIn("bootstrap", error["stackTrace"][0])
        # The runtime keeps serving after a failed invocation.
        api.invoke("req-next", {"n": 1})
        self.assertEqual(api.wait_posted()[1], "req-next")
        out, _ = self.stop(child)
        self.assertIn("[ERROR] ValueError: bad input: 7", out)

    def test_marshal_error(self):
        api = self.http_api()
        self.spawn(api.address, "app.unserializable", use_websocket="false")
        api.invoke("req-m", {})
        kind, _, headers, body = api.wait_posted()
        self.assertEqual(kind, "error")
        self.assertEqual(headers.get("Lambda-Runtime-Function-Error-Type"), "Runtime.MarshalError")
        error = json.loads(body)
        self.assertEqual(error["errorType"], "Runtime.MarshalError")
        self.assertTrue(error["errorMessage"].startswith("Unable to marshal response:"), error)

    def test_context_fields_remaining_time_and_logging(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.context_fields", use_websocket="false")
        client_context = {"custom": {"k": "v"}, "client": {"app_title": "t"}, "env": {}}
        api.invoke(
            "req-ctx",
            {},
            **{
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 5000),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:local:0:function:my-fn",
                "Lambda-Runtime-Trace-Id": "Root=1-abc",
                "Lambda-Runtime-Client-Context": json.dumps(client_context),
                "Lambda-Runtime-Cognito-Identity": '{"cognitoIdentityId":"id-1"}',
            },
        )
        kind, _, _, body = api.wait_posted()
        self.assertEqual(kind, "response", body)
        fields = json.loads(body)
        remaining = fields.pop("remaining_ms")
        self.assertTrue(3000 < remaining <= 5000, remaining)
        self.assertEqual(
            fields,
            {
                "aws_request_id": "req-ctx",
                "function_name": "my fn",
                "function_version": "$LATEST",
                "memory_limit_in_mb": "256",
                "invoked_function_arn": "arn:aws:lambda:local:0:function:my-fn",
                "log_group_name": "/aws/lambda/my-fn",
                "log_stream_name": "2024/01/01/[$LATEST]abc",
                "client_context_custom": {"k": "v"},
                "client_app_title": "t",
                "cognito_identity_id": "id-1",
            },
        )
        out, _ = self.stop(child)
        self.assertIn("plain print line\n", out)
        self.assertRegex(
            out, r"\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\treq-ctx\tlogged warning\n"
        )

    def test_json_log_format_and_level(self):
        # LoggingConfig JSON: logging calls become AWS's JSON records, filtered by the level.
        api = self.http_api()
        child = self.spawn(
            api.address,
            "app.context_fields",
            use_websocket="false",
            AWS_LAMBDA_LOG_FORMAT="JSON",
            AWS_LAMBDA_LOG_LEVEL="WARN",
        )
        api.invoke("req-json", {}, **{"Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 5000)})
        kind, _, _, body = api.wait_posted()
        self.assertEqual(kind, "response", body)
        out, _ = self.stop(child)
        records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        self.assertEqual(len(records), 1, out)
        record = records[0]
        self.assertEqual(record["level"], "WARNING")
        self.assertEqual(record["message"], "logged warning")
        self.assertEqual(record["requestId"], "req-json")
        self.assertEqual(record["logger"], "root")
        self.assertRegex(record["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertIn("plain print line\n", out)

    def test_websocket_disabled_forces_http(self):
        api = self.http_api()
        child = self.spawn(
            api.address, "app.echo", use_websocket="false", pythonpath=WEBSOCKETS_PATH or ""
        )
        self.assert_http_invocation(api, "req-1", {"x": 1}, {"echo": {"x": 1}})
        out, _ = self.stop(child)
        self.assertEqual(api.websocket_attempts, 0)
        self.assertNotIn("WebSocket", out)

    def test_fallback_when_websockets_missing(self):
        # Only the opt-in library client needs the package; the default one is built in.
        api = self.http_api()
        child = self.spawn(
            api.address,
            "app.echo",
            pythonpath=os.path.join(CODE_DIR, "no-websockets"),
            LAMBDA_WS_CLIENT="library",
        )
        self.assert_http_invocation(api, "req-1", {"x": 2}, {"echo": {"x": 2}})
        out, _ = self.stop(child)
        self.assertEqual(api.websocket_attempts, 0)
        self.assertIn(
            "WebSocket unavailable (websockets package not found), falling back to HTTP", out
        )

    @NEEDS_WEBSOCKETS
    def test_fallback_when_websocket_endpoint_answers_404(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH)
        self.assert_http_invocation(api, "req-1", {"x": 3}, {"echo": {"x": 3}})
        out, _ = self.stop(child)
        self.assertEqual(api.websocket_attempts, 1)
        self.assertIn("WebSocket connection failed (", out)
        self.assertIn("falling back to HTTP", out)

    def test_function_modules_named_like_the_standard_library_s_do_not_break_http(self):
        # HTTP only, and HTTP after a failed upgrade: http.client is imported without the
        # task root (its email.py is not a package) on the module path.
        shadow = os.path.join(CODE_DIR, "shadow")
        for use_websocket in ("false", "true"):
            api = self.http_api()
            child = self.spawn(
                api.address, "app.echo", use_websocket=use_websocket, LAMBDA_TASK_ROOT=shadow
            )
            self.assert_http_invocation(api, "req-s", {"s": 1}, {"echo": {"s": 1}})
            self.stop(child)

    def test_sigterm_exits_cleanly(self):
        api = self.http_api()
        child = self.spawn(api.address, "app.echo", use_websocket="false")
        self.assert_http_invocation(api, "req-1", {}, {"echo": {}})
        child.send_signal(signal.SIGTERM)
        self.assertEqual(child.wait(WAIT_S), 0)


@NEEDS_WEBSOCKETS
class WebSocketTests(RuntimeTestCase):
    def ws_api(self):
        api = MockWebSocketApi()
        self.addCleanup(api.close)
        return api

    def invoke(self, connection, request_id, payload):
        self.send_invocation(connection, request_id, payload)
        return decode_message(connection.recv(timeout=WAIT_S))

    def send_invocation(self, connection, request_id, payload):
        connection.send(
            json.dumps(
                {
                    "type": "invocation",
                    "request_id": request_id,
                    "payload": payload,
                    "deadline_ms": int(time.time() * 1000) + 5000,
                    "invoked_function_arn": "arn:aws:lambda:local:0:function:my-fn",
                    "trace_id": "Root=1-ws",
                    "client_context": None,
                    "cognito_identity": None,
                }
            )
        )

    def test_full_loop(self):
        api = self.ws_api()
        child = self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH)
        connection, path, register = api.accept()
        self.assertEqual(path, "/2018-06-01/runtime/websocket?fn=my%20fn")
        self.assertEqual(
            register,
            {
                "type": "register",
                "function_name": "my fn",
                "runtime": "python3.11",
                "version": "$LATEST",
                "instance_id": "instance-7",
            },
        )
        # It offered the registration in the upgrade request too; a server that does not take
        # it (this one) gets the `register` message.
        self.assertEqual(connection.request.headers["Lambda-Runtime-Instance-Id"], "instance-7")
        connection.send('{"type":"ping"}')
        self.assertEqual(json.loads(connection.recv(timeout=WAIT_S)), {"type": "pong"})
        for n in range(2):
            reply = self.invoke(connection, "ws-%d" % n, {"n": n})
            self.assertEqual(
                reply,
                {
                    "type": "response",
                    "request_id": "ws-%d" % n,
                    "payload": {"echo": {"n": n}},
                    "headers": {"X-Amz-Executed-Version": "$LATEST"},
                },
            )
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=WAIT_S)
        self.assertEqual(child.returncode, 0)
        self.assertNotIn("Got invocation", out)

    def test_error_and_context(self):
        api = self.ws_api()
        self.spawn(api.address, "app.fail", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        reply = self.invoke(connection, "ws-err", {"n": 9})
        stack = reply.pop("stack_trace")
        self.assertEqual(
            reply,
            {
                "type": "error",
                "request_id": "ws-err",
                "error_message": "bad input: 9",
                "error_type": "ValueError",
                "headers": {"X-Amz-Function-Error": "Unhandled"},
            },
        )
        self.assertEqual(len(stack), 1, stack)
        self.assertIn("in fail", stack[0])

    def test_context_over_websocket(self):
        api = self.ws_api()
        child = self.spawn(
            api.address, "app.context_fields", pythonpath=WEBSOCKETS_PATH, LAMBDA_RUNTIME_DEBUG="1"
        )
        connection, _, _ = api.accept()
        reply = self.invoke(connection, "ws-ctx", {})
        fields = reply["payload"]
        self.assertEqual(fields["aws_request_id"], "ws-ctx")
        self.assertEqual(fields["invoked_function_arn"], "arn:aws:lambda:local:0:function:my-fn")
        self.assertTrue(3000 < fields["remaining_ms"] <= 5000, fields)
        # The debug line follows the send; a ping round trip orders it before the kill.
        connection.send('{"type":"ping"}')
        connection.recv(timeout=WAIT_S)
        out, _ = self.stop(child)
        self.assertIn("WebSocket connected\n", out)
        self.assertIn("Got invocation: ws-ctx\n", out)
        self.assertIn("Posted response for: ws-ctx\n", out)

    def test_error_response_before_first_invocation_falls_back(self):
        api = self.ws_api()
        child = self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        connection.send('{"type":"error_response","message":"unknown instance","code":"E1"}')
        line = self.wait_for_line(child, "falling back to HTTP")
        self.assertEqual(
            line,
            "WebSocket connection failed (WebSocket error_response: unknown instance (E1)), "
            "falling back to HTTP\n",
        )

    def test_reconnects_after_drop(self):
        api = self.ws_api()
        self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH)
        first, _, _ = api.accept()
        self.assertEqual(self.invoke(first, "a", 1)["payload"], {"echo": 1})
        first.close()
        second, _, register = api.accept()
        self.assertEqual(register["type"], "register")
        self.assertEqual(self.invoke(second, "b", 2)["payload"], {"echo": 2})

    def test_builtin_client_needs_no_websockets_package(self):
        api = self.ws_api()
        child = self.spawn(
            api.address, "app.echo", pythonpath=os.path.join(CODE_DIR, "no-websockets")
        )
        connection, _, register = api.accept()
        self.assertEqual(register["instance_id"], "instance-7")
        reply = self.invoke(connection, "ws-b", {"k": "é✓"})
        self.assertTrue(reply.envelope, "responses travel as binary envelopes")
        self.assertEqual(
            reply,
            {
                "type": "response",
                "request_id": "ws-b",
                "payload": {"echo": {"k": "é✓"}},
                "headers": {"X-Amz-Executed-Version": "$LATEST"},
            },
        )
        out, _ = self.stop(child)
        self.assertNotIn("falling back", out)

    def test_registering_in_the_upgrade_request(self):
        api = MockWebSocketApi(take_header_registration=True)
        self.addCleanup(api.close)
        child = self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH)
        connection, _, register = api.accept()
        self.assertEqual(
            register,
            {
                "type": "register",
                "function_name": "my fn",
                "runtime": "python3.11",
                "version": "$LATEST",
                "instance_id": "instance-7",
                "by_header": True,
            },
        )
        # No `register` message: the first thing the runtime sends is the answer.
        reply = self.invoke(connection, "ws-h", {"h": 1})
        self.assertEqual((reply["type"], reply["payload"]), ("response", {"echo": {"h": 1}}))
        self.stop(child)

    def test_an_instance_id_that_cannot_be_a_header_is_only_sent_in_register(self):
        self.assertEqual(WS.register_headers("i-1\r\nX: y", "python3.11", "$LATEST"), ())
        self.assertEqual(WS.register_headers("", "python3.11", "$LATEST"), ())
        self.assertEqual(
            WS.register_headers("i-1", "python3.11", "$LATEST"),
            (
                "Lambda-Runtime-Instance-Id: i-1",
                "Lambda-Runtime-Name: python3.11",
                "Lambda-Runtime-Function-Version: $LATEST",
            ),
        )

    def test_the_websocket_transport_imports_no_http_client(self):
        # http.client (with email and ssl) and OpenSSL's hashlib cost about 15 ms of a first
        # start; the built-in WebSocket client needs neither. (urllib.parse is not checked: a
        # site hook of the host's Python may import it before the runtime runs.)
        api = self.ws_api()
        child = self.spawn(api.address, "app.loaded", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        reply = self.invoke(connection, "ws-m", ["http.client", "_hashlib", "json"])
        self.assertEqual(reply["payload"], {"http.client": False, "_hashlib": False, "json": True})
        self.stop(child)

    def test_library_client_opt_in(self):
        api = self.ws_api()
        self.spawn(api.address, "app.echo", pythonpath=WEBSOCKETS_PATH, LAMBDA_WS_CLIENT="library")
        connection, _, _ = api.accept()
        connection.send('{"type":"ping"}')
        self.assertEqual(json.loads(connection.recv(timeout=WAIT_S)), {"type": "pong"})
        reply = self.invoke(connection, "lib-1", [1, 2])
        self.assertTrue(reply.envelope)
        self.assertEqual(reply["payload"], {"echo": [1, 2]})

    def test_binary_invocation_and_bytes_result_verbatim(self):
        api = self.ws_api()
        self.spawn(api.address, "app.raw_bytes", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        header = json.dumps(
            {"type": "invocation", "request_id": "bin-1", "deadline_ms": 0,
             "invoked_function_arn": "arn", "trace_id": None,
             "client_context": None, "cognito_identity": None}
        ).encode()
        event = json.dumps({"pad": 70000}).encode()
        connection.send(struct.pack("!I", len(header)) + header + event)
        reply = decode_message(connection.recv(timeout=WAIT_S))
        self.assertEqual(reply["request_id"], "bin-1")
        # Like a POST /response over HTTP, a handler's bytes reach the server unchanged.
        self.assertEqual(reply["payload_bytes"], b"not json \xff" + b"z" * 70000)
        # A binary invocation whose payload is not JSON fails as Runtime.UnmarshalError.
        connection.send(struct.pack("!I", len(header)) + header.replace(b"bin-1", b"bin-2") + b"{")
        error = decode_message(connection.recv(timeout=WAIT_S))
        self.assertEqual((error["type"], error["request_id"]), ("error", "bin-2"))
        self.assertEqual(error["error_type"], "Runtime.UnmarshalError")


class StreamingTests(RuntimeTestCase):
    """A handler returning a generator streams each item as it is produced."""

    def post_stream(self, api, handler, request_id, event=None):
        self.spawn(api.address, handler, use_websocket="false")
        api.invoke(request_id, event or {})
        return api.wait_posted()

    def test_http_chunks_as_produced(self):
        api = self.http_api()
        kind, posted_id, headers, body = self.post_stream(api, "stream.chunks", "s-1")
        self.assertEqual((kind, posted_id), ("response", "s-1"))
        self.assertEqual(headers.get("Lambda-Runtime-Function-Response-Mode"), "streaming")
        self.assertEqual(headers.get("Transfer-Encoding"), "chunked")
        self.assertEqual(headers.get("Content-Type"), "text/plain")
        self.assertEqual(body, b"first;second:s-1")
        pieces = api.streams["s-1"]["pieces"]
        self.assertEqual(pieces[0][1], b"first;")
        self.assertGreaterEqual(pieces[-1][0] - pieces[0][0], 0.25, pieces)
        self.assertEqual(api.streams["s-1"]["trailers"], {})

    def test_http_error_mid_stream_goes_in_the_trailers(self):
        api = self.http_api()
        kind, _, _, body = self.post_stream(api, "stream.fails", "s-2")
        self.assertEqual((kind, body), ("response", b"partial"))
        trailers = api.streams["s-2"]["trailers"]
        self.assertEqual(trailers["lambda-runtime-function-error-type"], "KeyError")
        doc = json.loads(base64.b64decode(trailers["lambda-runtime-function-error-body"]))
        self.assertEqual((doc["errorType"], doc["errorMessage"]), ("KeyError", "'mid-stream'"))

    def test_http_error_before_the_first_item_is_an_ordinary_error(self):
        api = self.http_api()
        kind, _, headers, body = self.post_stream(api, "stream.fails_early", "s-3")
        self.assertEqual(kind, "error")
        self.assertEqual(headers.get("Lambda-Runtime-Function-Error-Type"), "KeyError")

    def test_http_items_must_be_bytes_or_str(self):
        api = self.http_api()
        kind, _, _, body = self.post_stream(api, "stream.wrong_item", "s-4")
        self.assertEqual(kind, "error")
        self.assertEqual(json.loads(body)["errorType"], "Runtime.MarshalError")

    def test_http_empty_stream(self):
        api = self.http_api()
        kind, _, headers, body = self.post_stream(api, "stream.empty", "s-5")
        self.assertEqual((kind, body), ("response", b""))
        self.assertEqual(headers.get("Content-Type"), "application/octet-stream")
        self.assertEqual(api.streams["s-5"]["pieces"], [])

    @NEEDS_WEBSOCKETS
    def test_websocket_chunks_then_end(self):
        api = MockWebSocketApi()
        self.addCleanup(api.close)
        self.spawn(api.address, "stream.chunks", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        WebSocketTests.send_invocation(self, connection, "w-1", {})
        received = []
        while True:
            message = connection.recv(timeout=WAIT_S)
            received.append((time.time(), message))
            if isinstance(message, str):
                break
        chunks = [struct.unpack("!I", m[:4])[0] for _, m in received[:-1]]
        headers = [json.loads(m[4 : 4 + n]) for n, (_, m) in zip(chunks, received)]
        data = [m[4 + n :] for n, (_, m) in zip(chunks, received)]
        self.assertEqual(
            headers,
            [
                {"type": "response_chunk", "request_id": "w-1", "content_type": "text/plain"},
                {"type": "response_chunk", "request_id": "w-1"},
            ],
        )
        self.assertEqual(data, [b"first;", b"second:w-1"])
        self.assertGreaterEqual(received[1][0] - received[0][0], 0.25)
        self.assertEqual(json.loads(received[-1][1]), {"type": "response_end", "request_id": "w-1"})

    @NEEDS_WEBSOCKETS
    def test_websocket_error_mid_stream(self):
        api = MockWebSocketApi()
        self.addCleanup(api.close)
        self.spawn(api.address, "stream.fails", pythonpath=WEBSOCKETS_PATH)
        connection, _, _ = api.accept()
        WebSocketTests.send_invocation(self, connection, "w-2", {})
        chunk = decode_message(connection.recv(timeout=WAIT_S))
        self.assertEqual(chunk["type"], "response_chunk")
        end = json.loads(connection.recv(timeout=WAIT_S))
        self.assertEqual(end["type"], "response_end")
        self.assertEqual((end["error_type"], end["error_message"]), ("KeyError", "'mid-stream'"))


class RawClientTests(unittest.TestCase):
    """The built-in client (bootstrap-websocket.py's RawWebSocket) against RawServer."""

    def serve(self, script, reply=None):
        server = RawServer(script, reply)
        self.addCleanup(server.close)
        return server

    def connect(self, server):
        host, port = server.address.split(":")
        ws = WS.RawWebSocket(host, int(port), server.address, "/ws?fn=f")
        self.addCleanup(ws.sock.close)
        return ws

    def test_an_ip_literal_is_connected_without_getaddrinfo(self):
        # getaddrinfo's "idna" encoding of the host cost a forked instance 1.5-6 ms of its start
        # (its first use imports encodings.idna and unicodedata); AWS_LAMBDA_RUNTIME_API is an
        # IP literal, and a name still goes through getaddrinfo.
        server = self.serve(lambda conn: conn.read_frame())
        host, port = server.address.split(":")
        calls = []

        def refusing_getaddrinfo(*args, **kwargs):
            calls.append(args[0])
            raise OSError("getaddrinfo called")

        saved = socket.getaddrinfo
        socket.getaddrinfo = refusing_getaddrinfo
        try:
            sock = WS.connect_tcp(host, int(port), WAIT_S)
            sock.close()
            with self.assertRaisesRegex(OSError, "getaddrinfo called"):
                WS.connect_tcp("localhost", int(port), WAIT_S)
        finally:
            socket.getaddrinfo = saved
        self.assertEqual(calls, ["localhost"])

    def test_mask_matches_the_rfc_loop_and_is_its_own_inverse(self):
        key = b"\x12\xab\xff\x01"
        for n in (0, 1, 3, 4, 5, 125, 1000, 70001):
            data = os.urandom(n)
            for offset in range(4):
                masked = WS.mask(data, key, offset)
                self.assertEqual(masked, naive_mask(data, key[offset:] + key[:offset]))
                self.assertEqual(WS.mask(masked, key, offset), data)

    def test_handshake_masking_lengths_and_envelope_both_ways(self):
        frames = queue.Queue()
        mid, big = b"m" * 60000, os.urandom(300000)

        def script(conn):
            for _ in range(4):
                frames.put(conn.read_frame())
            conn.send(server_frame(1, mid) + server_frame(2, big) + server_frame(1, b"{}"))
            conn.read_frame()

        server = self.serve(script)
        ws = self.connect(server)
        self.assertTrue(server.heads[0].startswith("GET /ws?fn=f HTTP/1.1\r\n"))
        self.assertIn("\r\nSec-WebSocket-Version: 13", server.heads[0])
        self.assertEqual(WS.accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        ws.send_text("héllo ✓")
        ws.send_text("x" * 126)
        ws.send_text("y" * 70000)
        ws.send_envelope(b'{"type":"response","request_id":"r-1"}', b"hello")
        got = [frames.get(timeout=WAIT_S) for _ in range(4)]
        self.assertEqual([(f[1], f[3], f[4]) for f in got], [(1, True, 7), (1, True, 16), (1, True, 64), (2, True, 7)])
        self.assertEqual(got[0][2].decode(), "héllo ✓")
        self.assertEqual(got[2][2], b"y" * 70000)
        # The example envelope of docs/websocket-protocol.md.
        self.assertEqual(got[3][2], b"\0\0\0\x26" + b'{"type":"response","request_id":"r-1"}hello')
        self.assertEqual(ws.recv(), (mid, False))
        self.assertEqual(ws.recv(), (big, True))
        self.assertEqual(ws.recv(), (b"{}", False))
        self.assertEqual(server.errors, [])

    def test_fragmented_message_with_a_ping_in_between(self):
        pongs = queue.Queue()

        def script(conn):
            conn.send(
                server_frame(1, b'{"type":', fin=False)
                + server_frame(0, b'"invo', fin=False)
                + server_frame(9, b"are you there")
                + server_frame(0, b'cation"}')
            )
            pongs.put(conn.read_frame())
            conn.read_frame()

        ws = self.connect(self.serve(script))
        self.assertEqual(ws.recv(), (b'{"type":"invocation"}', False))
        fin, opcode, payload, masked, _ = pongs.get(timeout=WAIT_S)
        self.assertEqual((fin, opcode, payload, masked), (True, 10, b"are you there", True))

    def test_close_frame_is_echoed_and_ends_recv(self):
        echoes = queue.Queue()

        def script(conn):
            conn.send(server_frame(8, struct.pack("!H", 1008) + b"policy"))
            echoes.put(conn.read_frame())

        ws = self.connect(self.serve(script))
        with self.assertRaisesRegex(WS.ConnectionClosed, r"received close frame 1008 \(policy\)"):
            ws.recv()
        _, opcode, payload, masked, _ = echoes.get(timeout=WAIT_S)
        self.assertEqual((opcode, payload, masked), (8, struct.pack("!H", 1008), True))

    def test_protocol_errors_close_the_connection(self):
        for frame, code, why in (
            (server_frame(1, b"hi", masked=True), 1002, "masked server frame"),
            (server_frame(0, b"x"), 1002, "continuation without a message"),
            (bytes((0x81 | 0x40, 0)), 1002, "RSV bits set"),
            (bytes((0x82, 127)) + struct.pack("!Q", 1 << 40), 1009, "frame of"),
        ):
            with self.subTest(why=why):
                closes = queue.Queue()

                def script(conn, frame=frame, closes=closes):
                    conn.send(frame)
                    closes.put(conn.read_frame())

                ws = self.connect(self.serve(script))
                with self.assertRaisesRegex(WS.ConnectionClosed, why):
                    ws.recv()
                _, opcode, payload, _, _ = closes.get(timeout=WAIT_S)
                self.assertEqual((opcode, payload), (8, struct.pack("!H", code)))

    def test_refused_and_invalid_upgrades(self):
        not_found = self.serve(None, lambda accept, n: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        with self.assertRaisesRegex(WS.InvalidStatus, "^server rejected WebSocket connection: HTTP 404$"):
            self.connect(not_found)
        bad_accept = self.serve(
            None,
            lambda accept, n: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
        )
        with self.assertRaisesRegex(WS.InvalidHandshake, "Sec-WebSocket-Accept"):
            self.connect(bad_accept)


class ReconnectTests(RuntimeTestCase):
    def test_reconnect_gives_up_after_ten_attempts_then_falls_back(self):
        replies = queue.Queue()

        def script(conn):
            register = json.loads(conn.read_data())
            self.assertEqual(register["type"], "register")
            conn.send(server_frame(1, json.dumps(
                {"type": "invocation", "request_id": "r-1", "deadline_ms": 0,
                 "invoked_function_arn": "arn", "trace_id": None, "client_context": None,
                 "cognito_identity": None, "payload": {"n": 1}}).encode()))
            replies.put(decode_message(conn.read_data()))
            conn.sock.shutdown(socket.SHUT_RDWR)  # dropped without a close frame

        refuse_after_first = (
            lambda accept, n: None if n == 1 else "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
        )
        server = RawServer(script, refuse_after_first)
        self.addCleanup(server.close)
        started = time.time()
        child = self.spawn(server.address, "app.echo")
        self.assertEqual(replies.get(timeout=WAIT_S)["payload"], {"echo": {"n": 1}})
        # 50 ms doubling to 2 s between the 10 attempts: about 9 s.
        line = self.wait_for_line(child, "falling back to HTTP", wait_s=30)
        self.assertEqual(
            line,
            "WebSocket connection failed (reconnect failed after 10 attempts: InvalidStatus: "
            "server rejected WebSocket connection: HTTP 404), falling back to HTTP\n",
        )
        self.assertEqual(server.upgrades, 11)
        self.assertGreater(time.time() - started, 8)


if __name__ == "__main__":
    unittest.main()
