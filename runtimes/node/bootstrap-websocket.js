'use strict';
// WebSocket transport of the Lambda@Home Node.js runtime (docs/websocket-protocol.md):
// connects to ws://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/websocket?fn=NAME, sends
// `register`, answers `ping`, runs `invocation`s one at a time and sends `response` /
// `error`. runWebSocket() resolves with a reason string when the caller must fall
// back to HTTP: the first connection failed (connect error, close or error_response
// before any invocation), or reconnecting after a drop gave up. Needs `ws` ^8.14.

const common = require('./runtime-common');

const RECONNECT_DELAY_INITIAL_MS = 50;
const RECONNECT_DELAY_MAX_MS = 2000;
const RECONNECT_ATTEMPTS_MAX = 10;
// A reconnected socket that stays up this long counts as healthy again.
const CONNECTION_HEALTHY_MS = 5000;
const HANDSHAKE_TIMEOUT_MS = 5000;

function websocketUrl(config) {
  const fn = encodeURIComponent(config.functionName);
  return `ws://${config.runtimeApi}/2018-06-01/runtime/websocket?fn=${fn}`;
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

// Serialises the outcome; a result JSON cannot represent becomes an error message.
function outcomeMessage(requestId, outcome, config) {
  if (outcome.ok) {
    try {
      const payload = common.serializeResult(outcome.result);
      return {
        ok: true,
        text:
          `{"type":"response","request_id":${JSON.stringify(requestId)},"payload":${payload},` +
          `"headers":${JSON.stringify({ 'X-Amz-Executed-Version': config.functionVersion })}}`,
      };
    } catch (err) {
      outcome = { ok: false, error: common.formatError(err) };
    }
  }
  common.logInvokeError(outcome.error);
  return { ok: false, text: errorMessage(requestId, outcome.error) };
}

// The socket must not keep the event loop alive while a handler runs, so that an
// empty loop (AWS's callbackWaitsForEmptyEventLoop) can be detected.
function setSocketRef(ws, referenced) {
  const socket = ws._socket;
  if (!socket) return;
  if (referenced) socket.ref();
  else socket.unref();
}

class WebSocketSession {
  constructor({ WebSocket, handler, config }) {
    this.WebSocket = WebSocket;
    this.handler = handler;
    this.config = config;
    this.debug = common.makeDebugLog(config);
    this.hadInvocation = false; // any invocation ever received: drops then reconnect
    this.attempts = 0;
    this.queue = []; // [{ ws, msg }] waiting for the running invocation
    this.running = null; // promise of the invocation in flight
    this.ws = null;
    this.stopped = false;
  }

  run() {
    return new Promise((resolve) => {
      this.resolveFallback = resolve;
      this.connect();
    });
  }

  connect() {
    const ws = new this.WebSocket(websocketUrl(this.config), {
      perMessageDeflate: false,
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
    });
    const conn = { ws, failure: null, openedAt: 0 };
    this.ws = ws;
    ws.on('open', () => this.onOpen(conn));
    ws.on('message', (data) => this.onMessage(conn, data));
    ws.on('error', (err) => {
      conn.failure = conn.failure || (err && err.message) || String(err);
    });
    ws.on('close', (code, reason) => this.onClose(conn, code, reason));
  }

  onOpen(conn) {
    conn.openedAt = Date.now();
    if (conn.ws._socket) conn.ws._socket.setNoDelay(true);
    this.debug('WebSocket connected');
    conn.ws.send(registerMessage(this.config));
  }

  onMessage(conn, data) {
    let msg;
    try {
      msg = JSON.parse(data.toString());
    } catch (_err) {
      this.debug('Ignoring non-JSON WebSocket message');
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'ping':
        conn.ws.send('{"type":"pong"}');
        break;
      case 'invocation':
        this.hadInvocation = true;
        this.attempts = 0;
        this.debug(`Got invocation: ${msg.request_id}`);
        this.queue.push({ ws: conn.ws, msg });
        this.pump();
        break;
      case 'error_response':
        this.onErrorResponse(conn, msg);
        break;
      default:
        this.debug(`Ignoring WebSocket message of type ${msg.type}`);
    }
  }

  onErrorResponse(conn, msg) {
    const text = `error_response ${msg.code}: ${msg.message}`;
    common.runtimeLog(`WebSocket ${text}`);
    if (!this.hadInvocation) {
      conn.failure = text;
      conn.ws.close();
    }
  }

  onClose(conn, code, reason) {
    if (this.stopped || this.ws !== conn.ws) return;
    const why = conn.failure || `closed with code ${code}${reason && reason.length ? ` ${reason}` : ''}`;
    // Invocations of a dead connection are failed by the server; never run them.
    this.queue = this.queue.filter((item) => item.ws !== conn.ws);
    if (!this.hadInvocation) {
      this.stop(why);
      return;
    }
    if (conn.openedAt && Date.now() - conn.openedAt >= CONNECTION_HEALTHY_MS) this.attempts = 0;
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
    if (this.ws) this.ws.terminate();
    Promise.resolve(this.running).then(() => this.resolveFallback(reason));
  }

  pump() {
    if (this.running || this.queue.length === 0 || this.stopped) return;
    const { ws, msg } = this.queue.shift();
    this.running = this.execute(ws, msg).then(() => {
      this.running = null;
      this.pump();
    });
  }

  async execute(ws, msg) {
    const requestId = msg.request_id;
    setSocketRef(ws, false);
    let outcome;
    try {
      outcome = await common.invoke(this.handler, this.config, toInvocation(msg));
    } finally {
      setSocketRef(ws, true);
    }
    const { ok, text } = outcomeMessage(requestId, outcome, this.config);
    if (ws.readyState !== this.WebSocket.OPEN) {
      this.debug(`Dropped result for ${requestId}: connection closed`);
    } else {
      await new Promise((resolve) => ws.send(text, resolve));
      this.debug(`Posted ${ok ? 'response' : 'error'} for: ${requestId}`);
    }
    if (outcome.exitCode !== undefined) process.exit(outcome.exitCode);
  }
}

// Serves invocations over WebSocket; resolves with the reason to fall back to HTTP.
function runWebSocket({ WebSocket, handler, config }) {
  return new WebSocketSession({ WebSocket, handler, config }).run();
}

module.exports = { runWebSocket, websocketUrl, registerMessage, RECONNECT_ATTEMPTS_MAX };
