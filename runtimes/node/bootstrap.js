#!/usr/bin/env node
'use strict';
// Entry point of the Lambda@Home Node.js runtime: `node bootstrap.js`, cwd = code dir.
// Loads the handler (init errors go to /runtime/init/error), then serves invocations
// over the WebSocket Runtime API (bootstrap-websocket.js, needs the `ws` package) when
// LAMBDA_USE_WEBSOCKET is not "false", falling back to the AWS Runtime API 2018-06-01
// over HTTP, implemented here with node's http module only (no dependencies).
// One invocation at a time; a single keep-alive connection to the Runtime API.

const http = require('http');
const common = require('./runtime-common');

const API_PREFIX = '/2018-06-01/runtime';
// Retries for a request that failed at the socket level (e.g. the server closed an
// idle keep-alive connection just as we reused it).
const REQUEST_ATTEMPTS_MAX = 3;
const REQUEST_RETRY_DELAY_MS = 50;
const RETRYABLE_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ECONNABORTED']);

function parseHostPort(runtimeApi) {
  const idx = runtimeApi.lastIndexOf(':');
  const host = idx > 0 ? runtimeApi.slice(0, idx) : runtimeApi;
  const port = idx > 0 ? Number(runtimeApi.slice(idx + 1)) : 80;
  return { host: host.replace(/^\[(.*)\]$/, '$1'), port };
}

class RuntimeApiClient {
  constructor(runtimeApi) {
    const { host, port } = parseHostPort(runtimeApi);
    this.host = host;
    this.port = port;
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  }

  requestOnce(method, path, body, headers) {
    return new Promise((resolve, reject) => {
      const req = http.request(
        { host: this.host, port: this.port, method, path, agent: this.agent, headers },
        (res) => {
          const chunks = [];
          res.on('data', (chunk) => chunks.push(chunk));
          res.on('end', () =>
            resolve({
              status: res.statusCode,
              headers: res.headers,
              body: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          res.on('error', reject);
        },
      );
      req.setNoDelay(true);
      req.on('error', reject);
      req.end(body);
    });
  }

  async request(method, path, body, extraHeaders = {}) {
    const headers = { ...extraHeaders };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.requestOnce(method, path, body, headers);
      } catch (err) {
        if (attempt >= REQUEST_ATTEMPTS_MAX || !RETRYABLE_CODES.has(err.code)) throw err;
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

  postInvocationResponse(requestId, body) {
    const path = `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`;
    return this.request('POST', path, body);
  }
}

// Empty body -> {} (AWS); unparsable JSON surfaces as the invocation's error.
function parseEvent(body) {
  return body === '' ? {} : JSON.parse(body);
}

async function handleHttpInvocation(client, handler, config, debug) {
  const inv = await client.nextInvocation();
  debug(`Got invocation: ${inv.requestId}`);
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
  const client = new RuntimeApiClient(config.runtimeApi);
  const debug = common.makeDebugLog(config);
  for (;;) {
    await handleHttpInvocation(client, handler, config, debug);
  }
}

async function reportInitError(config, err) {
  const error = common.formatError(err);
  console.error('Init Error', `\t${JSON.stringify(error)}`);
  try {
    await new RuntimeApiClient(config.runtimeApi).postInitError(error);
  } catch (postErr) {
    common.runtimeLog(`Failed to post init error: ${postErr.message}`);
  }
}

// Returns the ws constructor, or null (with the reason logged) when unusable.
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

async function main() {
  common.installProcessHooks();
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
    const WebSocket = loadWebSocketModule(config.taskRoot);
    if (WebSocket) {
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
