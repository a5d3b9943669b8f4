#!/usr/bin/env node
'use strict';
// Entry point of the Lambda@Home Node.js runtime: `node bootstrap.js`, cwd = code dir.
// Loads the handler (init errors go to /runtime/init/error), then serves invocations
// over the WebSocket Runtime API (bootstrap-websocket.js with the built-in client of
// websocket-client.js, or the `ws` package when LAMBDA_WS_CLIENT=library) when
// LAMBDA_USE_WEBSOCKET is not "false", falling back to the AWS Runtime API 2018-06-01
// over HTTP, with the minimal keep-alive client below (node's net module only).
// One invocation at a time; a single keep-alive connection to the Runtime API. A handler
// wrapped in awslambda.streamifyResponse streams its response (a chunked /response with
// Lambda-Runtime-Function-Response-Mode: streaming; docs/streaming.md).

const fs = require('fs');
const Module = require('module');
const net = require('net');
const common = require('./runtime-common');

// Names the pooled process's control socket (removed from the environment at once).
const POOL_CONTROL_FD_VAR = '_LAMBDA_POOL_CONTROL_FD';
// Names a Docker pool slot's control dir (docs/cold-starts-docker.md): the runtime was started in
// a container before its function was known (removed from the environment at once).
const SLOT_DIR_VAR = '_LAMBDA_SLOT_DIR';
// A start message larger than this is not from the server (an instance's environment is a few KB).
const START_MESSAGE_BYTES_MAX = 1024 * 1024;

const API_PREFIX = '/2018-06-01/runtime';
// Retries for a request that failed at the socket level (e.g. the server closed an
// idle keep-alive connection just as we reused it).
const REQUEST_ATTEMPTS_MAX = 3;
const REQUEST_RETRY_DELAY_MS = 50;
const RETRYABLE_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ECONNABORTED']);
// A response head larger than this is not from a Runtime API.
const HEAD_BYTES_MAX = 64 * 1024;
const HEAD_END = Buffer.from('\r\n\r\n');
const CRLF = Buffer.from('\r\n');
// What node's http module accepts in a header value (it throws on anything else).
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

const { parseHostPort } = common;
// Trailers of a streamed response whose handler failed (the body is base64 of the error).
const ERROR_TYPE_TRAILER = 'Lambda-Runtime-Function-Error-Type';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';

function protocolError(message) {
  const err = new Error(`Runtime API: ${message}`);
  err.code = 'HPE_INVALID_RESPONSE';
  return err;
}

// Status line and headers (names lower-cased, repeats joined with ", ").
function parseHead(text) {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})(?: |$)/.exec(lines[0]);
  if (!m) throw protocolError(`bad status line ${JSON.stringify(lines[0].slice(0, 100))}`);
  const headers = {};
  for (let i = 1; i < lines.length; i += 1) {
    const colon = lines[i].indexOf(':');
    if (colon <= 0) throw protocolError('bad header line');
    const name = lines[i].slice(0, colon).trim().toLowerCase();
    const value = lines[i].slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  return { status: Number(m[1]), headers };
}

// A complete chunked body starting at `start`: { body, end } or null if more is needed.
function parseChunked(buf, start) {
  const parts = [];
  let pos = start;
  for (;;) {
    const lineEnd = buf.indexOf(CRLF, pos);
    if (lineEnd < 0) return null;
    const sizeText = buf.toString('latin1', pos, lineEnd).split(';')[0].trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) throw protocolError('bad chunk size');
    const size = parseInt(sizeText, 16);
    if (size === 0) {
      // Trailers (ignored) end with an empty line.
      const trailersEnd = buf.indexOf(CRLF, lineEnd + 2) === lineEnd + 2
        ? lineEnd + 4
        : buf.indexOf(HEAD_END, lineEnd) + 4;
      if (trailersEnd < 4 || trailersEnd > buf.length) return null;
      return { body: Buffer.concat(parts), end: trailersEnd };
    }
    const dataEnd = lineEnd + 2 + size;
    if (buf.length < dataEnd + 2) return null;
    parts.push(buf.subarray(lineEnd + 2, dataEnd));
    pos = dataEnd + 2;
  }
}

// HTTP/1.1 client for the Runtime API: one keep-alive net.Socket, one request at a
// time, each written with a single write (no Nagle), responses parsed by hand.
// The socket is unref'd while idle so a running handler's empty event loop is seen.
class RuntimeApiClient {
  // `config` (readConfig's) says whether the instance has its own Unix socket.
  constructor(runtimeApi, config = { runtimeSocket: '' }) {
    const { host, port } = parseHostPort(runtimeApi);
    this.host = host;
    this.port = port;
    this.config = config;
    this.hostHeader = `Host: ${runtimeApi}\r\n`;
    this.socket = null;
    this.buf = Buffer.alloc(0);
    this.head = null; // parsed head of the response being read
    this.pending = null; // { resolve, reject } of the request in flight
  }

  connect() {
    const socket = common.connectRuntimeApi(this.config, this.host, this.port);
    socket.on('data', (chunk) => this.onData(socket, chunk));
    socket.on('error', (err) => this.onClosed(socket, err));
    socket.on('close', () => this.onClosed(socket, null));
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.head = null;
    return socket;
  }

  onData(socket, chunk) {
    if (socket !== this.socket) return;
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    try {
      this.parse();
    } catch (err) {
      this.fail(err);
    }
  }

  // Settles the pending request once its whole response is buffered.
  parse() {
    for (;;) {
      if (!this.head) {
        const headEnd = this.buf.indexOf(HEAD_END);
        if (headEnd < 0) {
          if (this.buf.length > HEAD_BYTES_MAX) throw protocolError('response head too large');
          return;
        }
        this.head = parseHead(this.buf.toString('latin1', 0, headEnd));
        this.head.bodyStart = headEnd + 4;
        // 1xx responses (100 Continue) precede the real one.
        if (this.head.status < 200) {
          this.buf = this.buf.subarray(this.head.bodyStart);
          this.head = null;
          continue;
        }
      }
      const { status, headers, bodyStart } = this.head;
      let body;
      let end;
      if (/chunked/i.test(headers['transfer-encoding'] || '')) {
        const chunked = parseChunked(this.buf, bodyStart);
        if (!chunked) return;
        ({ body, end } = chunked);
      } else if (headers['content-length'] !== undefined || status === 204 || status === 304) {
        const length = status === 204 || status === 304 ? 0 : Number(headers['content-length']);
        if (!Number.isSafeInteger(length) || length < 0) throw protocolError('bad Content-Length');
        end = bodyStart + length;
        if (this.buf.length < end) return;
        body = this.buf.subarray(bodyStart, end);
      } else {
        return; // body runs to the end of the connection: settled in onClosed
      }
      this.buf = this.buf.subarray(end);
      this.head = null;
      const keepAlive = !/close/i.test(headers.connection || '');
      this.settle(status, headers, body, keepAlive);
      return;
    }
  }

  settle(status, headers, body, keepAlive) {
    const pending = this.pending;
    this.pending = null;
    if (keepAlive) this.socket.unref();
    else this.drop();
    if (pending) pending.resolve({ status, headers, body: body.toString('utf8') });
  }

  onClosed(socket, err) {
    if (socket !== this.socket) return;
    if (!err && this.head && this.pending) {
      // A response without length or chunking ends with the connection.
      const { status, headers, bodyStart } = this.head;
      this.settle(status, headers, this.buf.subarray(bodyStart), false);
      return;
    }
    if (!err) {
      err = new Error('socket hang up');
      err.code = 'ECONNRESET';
    }
    this.fail(err);
  }

  fail(err) {
    const pending = this.pending;
    this.pending = null;
    this.drop();
    if (pending) pending.reject(err);
  }

  drop() {
    if (this.socket) this.socket.destroy();
    this.socket = null;
  }

  // For good: a request in flight fails and none is retried or made again.
  close() {
    this.closed = true;
    this.drop();
  }

  requestOnce(method, path, body, headerText) {
    if (this.closed) return Promise.reject(new Error('Runtime API client closed'));
    return new Promise((resolve, reject) => {
      const socket = this.socket || this.connect();
      socket.ref();
      this.pending = { resolve, reject };
      const head = `${method} ${path} HTTP/1.1\r\n${this.hostHeader}${headerText}\r\n`;
      if (body === undefined) {
        socket.write(head, 'latin1');
        return;
      }
      const headBytes = head.length; // latin1: one byte per char
      const request = Buffer.allocUnsafe(headBytes + Buffer.byteLength(body));
      request.latin1Write(head, 0);
      request.utf8Write(body, headBytes);
      socket.write(request);
    });
  }

  async request(method, path, body, extraHeaders = {}) {
    let headerText = '';
    if (body !== undefined) {
      headerText += `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`;
    }
    for (const [name, value] of Object.entries(extraHeaders)) {
      if (value === undefined || INVALID_HEADER_CHAR.test(String(value))) {
        const err = new TypeError(`Invalid character in header content ["${name}"]`);
        err.code = value === undefined ? 'ERR_HTTP_INVALID_HEADER_VALUE' : 'ERR_INVALID_CHAR';
        throw err;
      }
      headerText += `${name}: ${value}\r\n`;
    }
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.requestOnce(method, path, body, headerText);
      } catch (err) {
        if (this.closed || attempt >= REQUEST_ATTEMPTS_MAX || !RETRYABLE_CODES.has(err.code)) throw err;
        await new Promise((r) => setTimeout(r, REQUEST_RETRY_DELAY_MS * attempt));
      }
    }
  }

  async nextInvocation() {
    const res = await this.request('GET', `${API_PREFIX}/invocation/next`);
    if (res.status !== 200) {
      throw new Error(`GET /invocation/next returned ${res.status}: ${res.body}`);
    }
    const h = res.headers;
    return {
      requestId: h['lambda-runtime-aws-request-id'],
      deadlineMs: Number(h['lambda-runtime-deadline-ms']),
      invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
      traceId: h['lambda-runtime-trace-id'],
      clientContext: h['lambda-runtime-client-context'],
      cognitoIdentity: h['lambda-runtime-cognito-identity'],
      body: res.body,
    };
  }

  postError(path, error) {
    return this.request('POST', path, JSON.stringify(error), {
      'Lambda-Runtime-Function-Error-Type': error.errorType,
    });
  }

  postInitError(error) {
    return this.postError(`${API_PREFIX}/init/error`, error);
  }

  postInvocationError(requestId, error) {
    return this.postError(`${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/error`, error);
  }

  // Opens a streamed /response (Lambda-Runtime-Function-Response-Mode: streaming): the
  // head goes out now, each write() as one HTTP chunk (resolved once the socket took it),
  // end(error) sends the last chunk with the error trailers and resolves with the answer.
  openStream(requestId, contentType) {
    if (INVALID_HEADER_CHAR.test(contentType)) contentType = 'application/octet-stream';
    const path = `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`;
    const socket = this.socket || this.connect();
    socket.ref();
    const answer = new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
    });
    answer.catch(() => {}); // a broken connection is reported by end()
    socket.write(
      `POST ${path} HTTP/1.1\r\n${this.hostHeader}Content-Type: ${contentType}\r\n` +
        'Lambda-Runtime-Function-Response-Mode: streaming\r\nTransfer-Encoding: chunked\r\n' +
        `Trailer: ${ERROR_TYPE_TRAILER}, ${ERROR_BODY_TRAILER}\r\n\r\n`,
      'latin1',
    );
    return {
      write: (buf) =>
        new Promise((resolve, reject) => {
          if (buf.length === 0) return resolve();
          const size = Buffer.from(`${buf.length.toString(16)}\r\n`, 'latin1');
          socket.write(Buffer.concat([size, buf, CRLF]), (err) => (err ? reject(err) : resolve()));
        }),
      end: (error) => {
        let trailers = '';
        if (error) {
          const type = INVALID_HEADER_CHAR.test(String(error.errorType)) ? 'Error' : error.errorType;
          const body = Buffer.from(JSON.stringify(error)).toString('base64');
          trailers = `${ERROR_TYPE_TRAILER}: ${type}\r\n${ERROR_BODY_TRAILER}: ${body}\r\n`;
        }
        socket.write(`0\r\n${trailers}\r\n`, 'latin1');
        return answer;
      },
    };
  }

  postInvocationResponse(requestId, body) {
    const path = `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`;
    return this.request('POST', path, body);
  }
}

// Empty body -> {} (AWS); unparsable JSON surfaces as the invocation's error.
function parseEvent(body) {
  return body === '' ? {} : JSON.parse(body);
}

// The sink of a streamed response over HTTP (see runtime-common's invokeStreaming).
function httpStreamSink(client, requestId) {
  let upload = null;
  return {
    start(contentType) {
      upload = client.openStream(requestId, contentType);
    },
    write(buf) {
      return upload.write(buf);
    },
    // An error before the first byte is an ordinary /error, as for any handler.
    finish(error) {
      if (!upload) return client.postInvocationError(requestId, error);
      return upload.end(error);
    },
  };
}

async function handleStreamingInvocation(client, handler, config, inv) {
  const sink = httpStreamSink(client, inv.requestId);
  let outcome;
  try {
    inv.event = parseEvent(inv.body);
    outcome = await common.invokeStreaming(handler, config, inv, sink);
  } catch (err) {
    outcome = { ok: false, error: common.formatError(err) };
  }
  if (!outcome.ok) common.logInvokeError(outcome.error);
  const res = await sink.finish(outcome.ok ? null : outcome.error);
  if (res.status >= 300) {
    common.runtimeLog(`Runtime API rejected result for ${inv.requestId}: ${res.status} ${res.body}`);
  }
  if (outcome.exitCode !== undefined) process.exit(outcome.exitCode);
}

async function handleHttpInvocation(client, handler, config, debug) {
  const inv = await client.nextInvocation();
  debug(`Got invocation: ${inv.requestId}`);
  if (common.isStreamingHandler(handler)) {
    await handleStreamingInvocation(client, handler, config, inv);
    debug(`Posted streamed response for: ${inv.requestId}`);
    return;
  }
  let outcome;
  try {
    inv.event = parseEvent(inv.body);
    outcome = await common.invoke(handler, config, inv);
  } catch (err) {
    outcome = { ok: false, error: common.formatError(err) };
  }
  let res;
  if (outcome.ok) {
    let body;
    try {
      body = common.serializeResult(outcome.result);
    } catch (err) {
      outcome = { ok: false, error: common.formatError(err) };
    }
    if (body !== undefined) res = await client.postInvocationResponse(inv.requestId, body);
  }
  if (!outcome.ok) {
    common.logInvokeError(outcome.error);
    res = await client.postInvocationError(inv.requestId, outcome.error);
  }
  if (res.status >= 300) {
    common.runtimeLog(`Runtime API rejected result for ${inv.requestId}: ${res.status} ${res.body}`);
  }
  debug(`Posted response for: ${inv.requestId}`);
  if (outcome.exitCode !== undefined) process.exit(outcome.exitCode);
}

async function runHttpLoop(handler, config) {
  const client = new RuntimeApiClient(config.runtimeApi, config);
  const debug = common.makeDebugLog(config);
  for (;;) {
    await handleHttpInvocation(client, handler, config, debug);
  }
}

async function reportInitError(config, err) {
  const error = common.formatError(err);
  console.error('Init Error', `\t${JSON.stringify(error)}`);
  try {
    await new RuntimeApiClient(config.runtimeApi, config).postInitError(error);
  } catch (postErr) {
    common.runtimeLog(`Failed to post init error: ${postErr.message}`);
  }
}

// Returns the ws constructor, or null (with the reason logged) when unusable (only with
// LAMBDA_WS_CLIENT=library: the default client is built in).
// Looked up via the runtime's own paths and NODE_PATH, then in the function's code.
function loadWebSocketModule(taskRoot) {
  try {
    return require('ws');
  } catch (_err) {
    // not next to the runtime: try the function's node_modules before giving up
  }
  try {
    return require(require.resolve('ws', { paths: [taskRoot] }));
  } catch (err) {
    if (err && err.code === 'MODULE_NOT_FOUND' && /'ws'/.test(err.message)) {
      common.runtimeLog('WebSocket unavailable (ws package not found), falling back to HTTP');
    } else {
      common.runtimeLog(
        `WebSocket unavailable (ws failed to load: ${err && err.message}), falling back to HTTP`,
      );
    }
    return null;
  }
}

// Loopback round trips through both transports' clients, made by a pooled process before it
// reports ready: node loads its TCP bindings and V8 compiles the clients' code now rather than
// during a claimed instance's init (about 3 ms of a pooled start on the test VM). Our own code
// against our own throwaway server, never a function's; best effort, bounded by WARM_UP_MS_MAX.
// Everything it opens is closed, so no handle of it outlives it into the instance's event loop.
const WARM_UP_MS_MAX = 2000;

// A full collection after the warm-up, while the process waits for a function anyway: the
// instance's start then allocates into an empty young generation instead of paying for a
// scavenge of the warm-up's garbage. `gc` is exposed for this one call (V8's documented flag,
// set at run time and cleared after; the function is reached through a fresh context, so
// `global.gc` stays undefined for the function's code).
function collectGarbage() {
  const v8 = require('v8');
  try {
    v8.setFlagsFromString('--expose-gc');
    require('vm').runInNewContext('gc')();
  } catch (_err) {
    // an engine without the flag: the start pays for its scavenge, as before
  } finally {
    // Off again: contexts and workers the function creates get no `gc`, as in an ordinary start.
    v8.setFlagsFromString('--no-expose-gc');
  }
}

// An invocation as the server frames it (an unmasked text frame), for the warm-up's session.
function warmUpInvocationFrame() {
  const text = Buffer.from(
    JSON.stringify({
      type: 'invocation',
      request_id: 'warm-up',
      deadline_ms: Date.now() + WARM_UP_MS_MAX,
      invoked_function_arn: 'arn:aws:lambda:warm-up:000000000000:function:warm-up',
      client_context: null,
      cognito_identity: null,
      payload: { warm: true },
    }),
  );
  const head =
    text.length < 126
      ? Buffer.from([0x81, text.length])
      : Buffer.from([0x81, 126, text.length >> 8, text.length & 0xff]);
  return Buffer.concat([head, text]);
}

async function warmUp() {
  const { RawWebSocket, acceptFor } = require('./websocket-client');
  const { WebSocketSession } = require('./bootstrap-websocket');
  let sessionAnswered;
  const answered = new Promise((resolve) => {
    sessionAnswered = resolve;
  });
  let session = null;
  const accepted = new Set();
  const server = net.createServer((conn) => {
    accepted.add(conn);
    conn.on('close', () => accepted.delete(conn));
    conn.on('error', () => {});
    conn.once('data', (chunk) => {
      const head = chunk.toString('latin1');
      const key = /^sec-websocket-key:\s*(\S+)/im.exec(head);
      if (!key) {
        // The HTTP client's invocation: /next gets one, its /response a 202.
        const answer = (text) => {
          if (text.startsWith('GET ')) {
            const body = '{"warm":true}';
            conn.write(
              'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n' +
                'Lambda-Runtime-Aws-Request-Id: warm-up\r\n' +
                `Lambda-Runtime-Deadline-Ms: ${Date.now() + WARM_UP_MS_MAX}\r\n` +
                'Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:warm-up:000000000000:function:warm-up\r\n' +
                `Content-Length: ${body.length}\r\n\r\n${body}`,
            );
          } else if (text.startsWith('POST ')) {
            conn.write('HTTP/1.1 202 Accepted\r\nContent-Length: 15\r\n\r\n{"status":"OK"}');
          }
        };
        answer(head);
        conn.on('data', (more) => answer(more.toString('latin1')));
        return;
      }
      // Registered in the upgrade request: the session's client (the probe's is not).
      const registered = /^lambda-runtime-instance-id:/im.test(head);
      conn.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
          `Sec-WebSocket-Accept: ${acceptFor(key[1])}\r\n` +
          (registered ? 'Lambda-Runtime-Registered: true\r\n\r\n' : '\r\n'),
      );
      if (!registered) {
        conn.once('data', () => conn.destroy());
        return;
      }
      // The session's client: one invocation, then its answer ends the warm-up's session.
      conn.write(warmUpInvocationFrame());
      conn.once('data', () => sessionAnswered());
    });
  });
  // Set when the bound below ends the warm-up: the steps not begun by then are skipped.
  let over = false;
  let client = null;
  const exchanges = new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  }).then(async () => {
    const api = `127.0.0.1:${server.address().port}`;
    // One invocation of a no-op handler through each transport: the first invocation of an
    // instance then runs code V8 has compiled. Over HTTP: /next, the handler, /response.
    const config = {
      ...common.readConfig({}),
      runtimeApi: api,
      runtimeSocket: null,
      functionName: 'warm-up',
      instanceId: 'warm-up',
    };
    const echo = async (event) => event;
    client = new RuntimeApiClient(api);
    try {
      await handleHttpInvocation(client, echo, config, () => {});
    } finally {
      client.drop();
    }
    if (over) return;
    await new Promise((resolve) => {
      const { host, port } = parseHostPort(api);
      const ws = new RawWebSocket(
        { host, port, hostHeader: api, path: `${API_PREFIX}/websocket` },
        { open: () => ws.sendText('{}'), message: () => {}, error: () => {}, close: resolve },
      );
    });
    if (over) return;
    // Over WebSocket: a whole session (registered in the upgrade request, one invocation, its
    // response envelope).
    session = new WebSocketSession({ handler: echo, config });
    const ended = session.run();
    await answered;
    session.stop('warm-up done');
    await ended;
  });
  let timer;
  const bounded = new Promise((resolve) => {
    timer = setTimeout(resolve, WARM_UP_MS_MAX);
  });
  await Promise.race([exchanges.catch(() => {}), bounded]);
  clearTimeout(timer);
  // Whatever did not finish in time ends here, so nothing of it runs in the instance.
  over = true;
  if (client) client.close();
  if (session) session.stop('warm-up over');
  for (const conn of accepted) conn.destroy();
  server.close();
  common.resetInvocationState();
}

// One `read` of `fd` into `buf` outside the event loop (a pooled process waits there), retried
// while the descriptor has nothing yet or the call was interrupted; the bytes read, 0 at EOF.
function readBlocking(fd, buf) {
  for (;;) {
    try {
      return fs.readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if (err.code !== 'EAGAIN' && err.code !== 'EINTR') throw err;
    }
  }
}

// Pooled start: waits (a blocking read, no event loop turn) for the start message on the
// control socket, then makes this process the instance: its environment replaces the pool's,
// the working directory becomes its code (which the server has just made visible), and
// module lookup re-reads NODE_PATH as node does at start. Returns false when the server
// dropped this process without a start (then it exits).
function awaitStart(fdText) {
  const fd = Number(fdText);
  delete process.env[POOL_CONTROL_FD_VAR];
  // The runtime's own modules, loaded now so that a start does not pay for them.
  require('./bootstrap-websocket');
  if (typeof Module._initPaths !== 'function') {
    fs.writeSync(fd, '{"refused":"this node cannot re-read NODE_PATH"}\n');
    return false;
  }
  fs.writeSync(fd, '{"ready":true}\n');
  const chunks = [];
  let total = 0;
  for (;;) {
    const buf = Buffer.allocUnsafe(64 * 1024);
    const n = readBlocking(fd, buf);
    if (n === 0) break;
    total += n;
    if (total > START_MESSAGE_BYTES_MAX) throw new Error('start message too large');
    chunks.push(buf.subarray(0, n));
  }
  fs.closeSync(fd);
  if (total === 0) return false;
  becomeInstance(JSON.parse(Buffer.concat(chunks).toString('utf8')).env);
  return true;
}

// The instance's environment replaces the process's (or, `over`, is set over it); the working
// directory becomes its code (visible by now), and module lookup re-reads NODE_PATH as node does
// at start.
function becomeInstance(env, over = false) {
  if (!over) for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, env);
  process.chdir(process.env.LAMBDA_TASK_ROOT);
  Module._initPaths();
}

// Docker pool slot: blocks (a blocking read, no event loop turn) on the slot's wake-up FIFO;
// once woken, the function's code is mounted on /var/task and `start.json` in the slot dir holds
// the instance's environment, set over the process's (the image's variables and the container's
// HOSTNAME stay, as in an ordinary start; every variable the slot was started with is in it).
// Returns false when the slot was dropped unused. A node that cannot
// re-read NODE_PATH exits at once: the server sees the slot dead at its claim and starts the
// instance anew.
function awaitSlotStart(dir) {
  delete process.env[SLOT_DIR_VAR];
  require('./bootstrap-websocket');
  if (typeof Module._initPaths !== 'function') process.exit(70);
  const go = fs.openSync(`${dir}/go`, 'r');
  const n = readBlocking(go, Buffer.alloc(16));
  fs.closeSync(go);
  if (n === 0) return false;
  const message = fs.readFileSync(`${dir}/start.json`);
  if (message.length > START_MESSAGE_BYTES_MAX) throw new Error('start message too large');
  becomeInstance(JSON.parse(message.toString('utf8')).env, true);
  // An ordinary start's shell exports the working directory.
  process.env.PWD = process.cwd();
  return true;
}

async function main() {
  const poolFd = process.env[POOL_CONTROL_FD_VAR];
  const slotDir = process.env[SLOT_DIR_VAR];
  if (poolFd !== undefined) {
    await warmUp();
    collectGarbage();
    if (!awaitStart(poolFd)) process.exit(0);
  } else if (slotDir !== undefined) {
    await warmUp();
    collectGarbage();
    if (!awaitSlotStart(slotDir)) process.exit(0);
  }
  common.installProcessHooks();
  common.installAwsLambdaGlobal();
  common.patchConsole();
  const config = common.readConfig();
  let handler;
  try {
    handler = await common.loadHandler(config.handler, config.taskRoot);
  } catch (err) {
    await reportInitError(config, err);
    process.exit(1);
  }
  if (config.useWebSocket) {
    // The built-in client needs nothing installed; LAMBDA_WS_CLIENT=library opts into `ws`.
    const WebSocket = config.wsClient === 'library' ? loadWebSocketModule(config.taskRoot) : undefined;
    if (WebSocket !== null) {
      const { runWebSocket } = require('./bootstrap-websocket');
      const reason = await runWebSocket({ WebSocket, handler, config });
      common.runtimeLog(`WebSocket connection failed (${reason}), falling back to HTTP`);
    }
  }
  await runHttpLoop(handler, config);
}

if (require.main === module) {
  main().catch((err) => {
    common.runtimeLog(`Runtime failure: ${(err && err.stack) || err}`);
    process.exit(1);
  });
}

module.exports = { RuntimeApiClient, parseHostPort, runHttpLoop };
