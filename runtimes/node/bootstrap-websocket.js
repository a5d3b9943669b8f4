'use strict';
// WebSocket transport of the Lambda@Home Node.js runtime (docs/websocket-protocol.md):
// connects to ws://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/websocket?fn=NAME, sends
// `register`, answers `ping`, runs `invocation`s one at a time and sends each `response` as
// a binary envelope (the server then never parses the payload) and each `error` as a text
// message; a streamifyResponse handler's output goes out as `response_chunk` envelopes and a
// `response_end` (docs/streaming.md). runWebSocket() resolves with a reason string when the caller must fall back to
// HTTP: the first connection failed (connect error, close or error_response before any
// invocation), or reconnecting after a drop gave up. Runs on the runtime's event loop.
//
// The client is the built-in one (websocket-client.js, node core only) unless the caller
// passes the `ws` package's constructor (LAMBDA_WS_CLIENT=library): both sit behind the same
// small connection interface (sendText, sendEnvelope, close, terminate, setRef, isOpen).

const common = require('./runtime-common');
const { RawWebSocket, HANDSHAKE_TIMEOUT_MS } = require('./websocket-client');

const RECONNECT_DELAY_INITIAL_MS = 50;
const RECONNECT_DELAY_MAX_MS = 2000;
const RECONNECT_ATTEMPTS_MAX = 10;
// A reconnected socket that stays up this long counts as healthy again.
const CONNECTION_HEALTHY_MS = 5000;
// Largest JSON header of a binary envelope (the server's BINARY_HEADER_BYTES_MAX).
const BINARY_HEADER_BYTES_MAX = 64 * 1024;

function websocketPath(config) {
  return `/2018-06-01/runtime/websocket?fn=${encodeURIComponent(config.functionName)}`;
}

function websocketUrl(config) {
  return `ws://${config.runtimeApi}${websocketPath(config)}`;
}

// What a header line may carry: visible ASCII and spaces (no CR or LF that would end it).
const HEADER_VALUE = /^[\x20-\x7e]*$/;

// The registration as upgrade request headers (docs/websocket-protocol.md, "Registering in the
// upgrade request"): a server that takes it answers the 101 with `Lambda-Runtime-Registered:
// true` and the runtime sends no `register`, which saves a round trip before the first
// invocation; any other server ignores the headers and gets the `register` message. None when a
// value cannot travel in a header (then `register` only).
function registerHeaders(config) {
  const values = [config.instanceId, config.runtimeName, config.functionVersion];
  if (!config.instanceId || !values.every((v) => HEADER_VALUE.test(v))) return [];
  return [
    `Lambda-Runtime-Instance-Id: ${config.instanceId}`,
    `Lambda-Runtime-Name: ${config.runtimeName}`,
    `Lambda-Runtime-Function-Version: ${config.functionVersion}`,
  ];
}

function registerMessage(config) {
  return JSON.stringify({
    type: 'register',
    function_name: config.functionName,
    runtime: config.runtimeName,
    version: config.functionVersion,
    instance_id: config.instanceId,
  });
}

// The `ws` package behind the connection interface of RawWebSocket.
class LibraryWebSocket {
  constructor(WebSocket, config, handlers) {
    this.WebSocket = WebSocket;
    const ws = new WebSocket(websocketUrl(config), {
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    this.ws = ws;
    ws.on('open', () => {
      if (ws._socket) ws._socket.setNoDelay(true);
      handlers.open();
    });
    ws.on('message', (data, isBinary) => handlers.message(data, isBinary));
    ws.on('error', (err) => handlers.error((err && err.message) || String(err)));
    ws.on('close', (code, reason) => handlers.close(code, reason ? reason.toString() : ''));
  }

  get isOpen() {
    return this.ws.readyState === this.WebSocket.OPEN;
  }

  setRef(referenced) {
    const socket = this.ws._socket;
    if (!socket) return;
    if (referenced) socket.ref();
    else socket.unref();
  }

  sendText(text, cb) {
    this.ws.send(text, cb);
  }

  sendEnvelope(header, payload, cb) {
    const head = Buffer.from(header);
    const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(head.length, 0);
    this.ws.send(Buffer.concat([len, head, body]), { binary: true }, cb);
  }

  close() {
    this.ws.close();
  }

  terminate() {
    this.ws.terminate();
  }
}

function toInvocation(msg) {
  return {
    requestId: msg.request_id,
    event: msg.payload === undefined ? {} : msg.payload,
    deadlineMs: msg.deadline_ms,
    invokedFunctionArn: msg.invoked_function_arn,
    traceId: msg.trace_id,
    clientContext: msg.client_context,
    cognitoIdentity: msg.cognito_identity,
  };
}

// A binary envelope from the server: its JSON header, with the payload bytes as `payloadBytes`
// (an invocation's event is parsed when it runs, so a bad one fails that invocation only).
function parseEnvelope(data) {
  if (data.length < 4) throw new Error('binary envelope shorter than 4 bytes');
  const headerBytes = data.readUInt32BE(0);
  if (headerBytes > BINARY_HEADER_BYTES_MAX || 4 + headerBytes > data.length) {
    throw new Error('binary envelope header length out of range');
  }
  const msg = JSON.parse(data.toString('utf8', 4, 4 + headerBytes));
  if (msg && typeof msg === 'object') msg.payloadBytes = data.subarray(4 + headerBytes);
  return msg;
}

function errorMessage(requestId, error) {
  return JSON.stringify({
    type: 'error',
    request_id: requestId,
    error_message: error.errorMessage,
    error_type: error.errorType,
    stack_trace: error.stackTrace,
    headers: { 'X-Amz-Function-Error': 'Unhandled' },
  });
}

// Serialises the outcome: { ok: true, header, payload } for a response envelope, or
// { ok: false, text } for an error; a result JSON cannot represent becomes an error.
function outcomeMessage(requestId, outcome, headersJson) {
  if (outcome.ok) {
    try {
      const payload = common.serializeResult(outcome.result);
      const header = `{"type":"response","request_id":${JSON.stringify(requestId)},"headers":${headersJson}}`;
      return { ok: true, header, payload };
    } catch (err) {
      outcome = { ok: false, error: common.formatError(err) };
    }
  }
  common.logInvokeError(outcome.error);
  return { ok: false, text: errorMessage(requestId, outcome.error) };
}

class WebSocketSession {
  constructor({ WebSocket, handler, config }) {
    this.WebSocket = WebSocket || null; // the `ws` package, or null for the built-in client
    this.handler = handler;
    this.config = config;
    this.debug = common.makeDebugLog(config);
    this.headersJson = JSON.stringify({ 'X-Amz-Executed-Version': config.functionVersion });
    this.hadInvocation = false; // any invocation ever received: drops then reconnect
    this.attempts = 0;
    this.queue = []; // [{ conn, msg }] waiting for the running invocation
    this.running = null; // promise of the invocation in flight
    this.conn = null;
    this.stopped = false;
  }

  run() {
    return new Promise((resolve) => {
      this.resolveFallback = resolve;
      this.connect();
    });
  }

  connect() {
    // `unix`: this attempt goes to the instance's own Unix socket (the built-in client only).
    const state = { conn: null, failure: null, openedAt: 0, unix: false };
    const handlers = {
      open: () => this.onOpen(state),
      message: (data, isBinary) => this.onMessage(state, data, isBinary),
      error: (message) => {
        state.failure = state.failure || message;
      },
      close: (code, reason) => this.onClose(state, code, reason),
    };
    if (this.WebSocket) {
      state.conn = new LibraryWebSocket(this.WebSocket, this.config, handlers);
    } else {
      const { host, port } = common.parseHostPort(this.config.runtimeApi);
      state.unix = Boolean(this.config.runtimeSocket);
      state.conn = new RawWebSocket(
        {
          host,
          port,
          hostHeader: this.config.runtimeApi,
          path: websocketPath(this.config),
          connect: () => common.connectRuntimeApi(this.config, host, port),
          headers: registerHeaders(this.config),
        },
        handlers,
      );
    }
    this.conn = state.conn;
  }

  onOpen(state) {
    state.openedAt = Date.now();
    this.debug('WebSocket connected');
    if (!state.conn.registered) state.conn.sendText(registerMessage(this.config));
  }

  onMessage(state, data, isBinary) {
    let msg;
    try {
      msg = isBinary ? parseEnvelope(data) : JSON.parse(data.toString());
    } catch (_err) {
      this.debug('Ignoring non-JSON WebSocket message');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'ping':
        state.conn.sendText('{"type":"pong"}');
        break;
      case 'invocation':
        this.hadInvocation = true;
        this.attempts = 0;
        this.debug(`Got invocation: ${msg.request_id}`);
        this.queue.push({ conn: state.conn, msg });
        this.pump();
        break;
      case 'error_response':
        this.onErrorResponse(state, msg);
        break;
      default:
        this.debug(`Ignoring WebSocket message of type ${msg.type}`);
    }
  }

  onErrorResponse(state, msg) {
    const text = `error_response ${msg.code}: ${msg.message}`;
    common.runtimeLog(`WebSocket ${text}`);
    if (!this.hadInvocation) {
      state.failure = text;
      state.conn.close();
    }
  }

  onClose(state, code, reason) {
    if (this.stopped || this.conn !== state.conn) return;
    const why = state.failure || `closed with code ${code}${reason && reason.length ? ` ${reason}` : ''}`;
    // Invocations of a dead connection are failed by the server; never run them.
    this.queue = this.queue.filter((item) => item.conn !== state.conn);
    if (state.unix && !state.openedAt && !this.config.runtimeSocket) {
      // The Unix socket refused the connection (connectRuntimeApi turned it off): the same
      // attempt again, over TCP, is not a failure of the WebSocket endpoint.
      this.debug(`WebSocket over the instance's Unix socket failed (${why}), using TCP`);
      this.connect();
      return;
    }
    if (!this.hadInvocation) {
      this.stop(why);
      return;
    }
    if (state.openedAt && Date.now() - state.openedAt >= CONNECTION_HEALTHY_MS) this.attempts = 0;
    this.attempts += 1;
    if (this.attempts > RECONNECT_ATTEMPTS_MAX) {
      this.stop(`gave up reconnecting after ${RECONNECT_ATTEMPTS_MAX} attempts: ${why}`);
      return;
    }
    const delay = Math.min(
      RECONNECT_DELAY_INITIAL_MS * 2 ** (this.attempts - 1),
      RECONNECT_DELAY_MAX_MS,
    );
    this.debug(`WebSocket closed (${why}), reconnecting in ${delay}ms`);
    setTimeout(() => this.connect(), delay);
  }

  // Falls back only once the invocation in flight is done: one at a time, always.
  stop(reason) {
    this.stopped = true;
    this.queue = [];
    if (this.conn) this.conn.terminate();
    Promise.resolve(this.running).then(() => this.resolveFallback(reason));
  }

  pump() {
    if (this.running || this.queue.length === 0 || this.stopped) return;
    const { conn, msg } = this.queue.shift();
    this.running = this.execute(conn, msg).then(() => {
      this.running = null;
      this.pump();
    });
  }

  // A streamifyResponse handler: each write goes out as a `response_chunk` binary envelope
  // (resolved once the socket took it), the end as `response_end` with the handler's error
  // if it failed; an error before the first byte is an ordinary `error` message.
  async executeStreaming(conn, msg) {
    const requestId = msg.request_id;
    let started = false;
    let contentType = null;
    const sink = {
      start(type) {
        started = true;
        contentType = type;
      },
      write(buf) {
        const header = { type: 'response_chunk', request_id: requestId };
        if (contentType !== null) header.content_type = contentType;
        contentType = null; // declared on the first chunk only
        return new Promise((resolve) => {
          if (!conn.isOpen) return resolve();
          conn.sendEnvelope(JSON.stringify(header), buf, resolve);
        });
      },
    };
    let outcome;
    try {
      const inv = toInvocation(msg);
      if (msg.payloadBytes !== undefined) {
        inv.event = msg.payloadBytes.length === 0 ? {} : JSON.parse(msg.payloadBytes.toString());
      }
      outcome = await common.invokeStreaming(this.handler, this.config, inv, sink);
    } catch (err) {
      outcome = { ok: false, error: common.formatError(err) };
    }
    if (!outcome.ok) common.logInvokeError(outcome.error);
    let text;
    if (!outcome.ok && !started) {
      text = errorMessage(requestId, outcome.error);
    } else {
      const end = { type: 'response_end', request_id: requestId };
      if (contentType !== null) end.content_type = contentType;
      if (!outcome.ok) {
        end.error_type = outcome.error.errorType;
        end.error_message = outcome.error.errorMessage;
        end.stack_trace = outcome.error.stackTrace;
      }
      text = JSON.stringify(end);
    }
    if (conn.isOpen) await new Promise((resolve) => conn.sendText(text, resolve));
    this.debug(`Posted streamed response for: ${requestId}`);
    if (outcome.exitCode !== undefined) process.exit(outcome.exitCode);
  }

  async execute(conn, msg) {
    if (common.isStreamingHandler(this.handler)) return this.executeStreaming(conn, msg);
    const requestId = msg.request_id;
    // The socket must not keep the event loop alive while a handler runs, so that an
    // empty loop (AWS's callbackWaitsForEmptyEventLoop) can be detected.
    conn.setRef(false);
    let outcome;
    try {
      const inv = toInvocation(msg);
      if (msg.payloadBytes !== undefined) {
        inv.event = msg.payloadBytes.length === 0 ? {} : JSON.parse(msg.payloadBytes.toString());
      }
      outcome = await common.invoke(this.handler, this.config, inv);
    } catch (err) {
      outcome = { ok: false, error: common.formatError(err) };
    } finally {
      conn.setRef(true);
    }
    const message = outcomeMessage(requestId, outcome, this.headersJson);
    if (!conn.isOpen) {
      this.debug(`Dropped result for ${requestId}: connection closed`);
    } else {
      await new Promise((resolve) => {
        if (message.ok) conn.sendEnvelope(message.header, message.payload, resolve);
        else conn.sendText(message.text, resolve);
      });
      this.debug(`Posted ${message.ok ? 'response' : 'error'} for: ${requestId}`);
    }
    if (outcome.exitCode !== undefined) process.exit(outcome.exitCode);
  }
}

// Serves invocations over WebSocket; resolves with the reason to fall back to HTTP.
// `WebSocket` is the `ws` package's constructor, or undefined for the built-in client.
function runWebSocket({ WebSocket, handler, config }) {
  return new WebSocketSession({ WebSocket, handler, config }).run();
}

module.exports = {
  RECONNECT_ATTEMPTS_MAX,
  WebSocketSession,
  parseEnvelope,
  registerMessage,
  registerHeaders,
  runWebSocket,
  websocketUrl,
};
