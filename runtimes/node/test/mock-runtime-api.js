'use strict';
// Test helpers (not a test file): a mock Lambda Runtime API (HTTP 2018-06-01 and, when
// `ws` can be loaded, the WebSocket Runtime API) on 127.0.0.1 with an ephemeral port,
// plus helpers to write handler fixtures and spawn `node bootstrap.js` against it.

const http = require('http');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');

const RUNTIME_DIR = path.resolve(__dirname, '..');
const BOOTSTRAP = path.join(RUNTIME_DIR, 'bootstrap.js');
const WS_PATH = '/2018-06-01/runtime/websocket';

function loadWs() {
  try {
    return require('ws');
  } catch (_err) {
    return null;
  }
}

const WS_SKIP_REASON =
  'ws not installed: run runtimes/install-deps.sh runtimes/.deps and set ' +
  'NODE_PATH=$PWD/runtimes/.deps/node/node_modules';

function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

// A body read piece by piece, with when each piece arrived and the trailers (a streamed
// response: Lambda-Runtime-Function-Response-Mode: streaming).
function readBodyTimed(req) {
  return new Promise((resolve) => {
    const pieces = [];
    req.on('data', (c) => pieces.push({ at: Date.now(), data: c }));
    req.on('end', () =>
      resolve({
        text: Buffer.concat(pieces.map((p) => p.data)).toString('utf8'),
        pieces,
        trailers: req.trailers,
      }),
    );
  });
}

function parseMaybe(text) {
  try {
    return JSON.parse(text);
  } catch (_err) {
    return text;
  }
}

// A binary envelope ([u32 BE header_len][JSON header][payload]) as the message it stands
// for: the header's fields plus `payload` (parsed when it is JSON), and what came how.
function decodeEnvelope(data) {
  const headerBytes = data.readUInt32BE(0);
  const msg = JSON.parse(data.toString('utf8', 4, 4 + headerBytes));
  const raw = data.subarray(4 + headerBytes);
  if (raw.length || msg.type === 'response') msg.payload = parseMaybe(raw.toString('utf8'));
  Object.defineProperty(msg, 'envelope', { value: { rawPayload: raw }, enumerable: false });
  return msg;
}

// Options: websocket: 'serve' | '404' (default '404'), errorResponse: send an
// error_response instead of accepting registrations.
async function startMockApi(options = {}) {
  const api = {
    pending: [], // invocations not yet delivered
    waiting: new Map(), // requestId -> resolve(result)
    nextWaiters: [], // parked GET /next responses
    initError: null,
    initErrorWaiters: [],
    registers: [],
    pongs: 0,
    pongWaiters: [],
    wsUpgrades: 0,
    httpNextCount: 0,
    tcpConnections: 0,
    sockets: new Set(),
    wsClients: new Set(),
    streams: new Map(), // requestId -> response_chunk messages received so far
  };

  const server = http.createServer(async (req, res) => {
    const url = req.url;
    if (req.method === 'GET' && url === '/2018-06-01/runtime/invocation/next') {
      api.httpNextCount += 1;
      api.nextWaiters.push(res);
      api.drain();
      return;
    }
    const streamMode = req.headers['lambda-runtime-function-response-mode'];
    const timed = streamMode ? await readBodyTimed(req) : null;
    const body = timed ? timed.text : await readBody(req);
    const m = /^\/2018-06-01\/runtime\/invocation\/([^/]+)\/(response|error)$/.exec(url);
    if (req.method === 'POST' && m) {
      const requestId = decodeURIComponent(m[1]);
      res.writeHead(202, { 'Content-Type': 'application/json' }).end('{"status":"OK"}');
      api.complete(requestId, {
        via: 'http',
        kind: m[2],
        body: parseMaybe(body),
        rawBody: body,
        errorTypeHeader: req.headers['lambda-runtime-function-error-type'],
        contentType: req.headers['content-type'],
        streamMode,
        transferEncoding: req.headers['transfer-encoding'],
        pieces: timed ? timed.pieces : undefined,
        trailers: timed ? timed.trailers : undefined,
      });
      return;
    }
    if (req.method === 'POST' && url === '/2018-06-01/runtime/init/error') {
      res.writeHead(202, { 'Content-Type': 'application/json' }).end('{"status":"OK"}');
      api.initError = {
        body: parseMaybe(body),
        errorTypeHeader: req.headers['lambda-runtime-function-error-type'],
      };
      api.initErrorWaiters.splice(0).forEach((w) => w(api.initError));
      return;
    }
    res.writeHead(404).end();
  });
  server.on('connection', (socket) => {
    api.tcpConnections += 1;
    api.sockets.add(socket);
    socket.on('close', () => api.sockets.delete(socket));
  });

  const WebSocket = loadWs();
  const wss = options.websocket === 'serve' && WebSocket ? new WebSocket.Server({ noServer: true }) : null;
  // options.takeHeaderRegistration: answer an upgrade that carries Lambda-Runtime-Instance-Id
  // with Lambda-Runtime-Registered: true and register it from its headers, as our server does.
  const byHeader = (req) => Boolean(options.takeHeaderRegistration && req.headers['lambda-runtime-instance-id']);
  if (wss) {
    wss.on('headers', (headers, req) => {
      if (byHeader(req)) headers.push('Lambda-Runtime-Registered: true');
    });
  }
  server.on('upgrade', (req, socket, head) => {
    api.wsUpgrades += 1;
    api.lastUpgradeUrl = req.url;
    api.lastUpgradeHeaders = req.headers;
    if (!wss || !req.url.startsWith(WS_PATH) || api.refuseUpgrades) {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => api.onWsClient(ws, req));
  });

  api.onWsClient = (ws, req) => {
    if (byHeader(req)) {
      const fn = new URL(req.url, 'http://mock').searchParams.get('fn');
      api.registers.push({
        type: 'register',
        function_name: fn,
        runtime: req.headers['lambda-runtime-name'],
        version: req.headers['lambda-runtime-function-version'],
        instance_id: req.headers['lambda-runtime-instance-id'],
        by_header: true,
      });
      api.wsClients.add(ws);
      api.drain();
    }
    ws.on('message', (data, isBinary) => {
      const msg = isBinary ? decodeEnvelope(data) : JSON.parse(data.toString());
      if (msg.type === 'register') {
        api.registers.push(msg);
        if (options.errorResponse) {
          ws.send(JSON.stringify({ type: 'error_response', message: 'nope', code: 'REJECTED' }));
          return;
        }
        api.wsClients.add(ws);
        api.drain();
      } else if (msg.type === 'pong') {
        api.pongs += 1;
        api.pongWaiters.splice(0).forEach((w) => w());
      } else if (msg.type === 'response_chunk') {
        // A streamed response: chunks gathered until response_end, each with its arrival time.
        const chunks = api.streams.get(msg.request_id) || [];
        chunks.push({ at: Date.now(), msg, data: msg.envelope ? msg.envelope.rawPayload : null });
        api.streams.set(msg.request_id, chunks);
      } else if (msg.type === 'response_end') {
        const chunks = api.streams.get(msg.request_id) || [];
        api.streams.delete(msg.request_id);
        api.complete(msg.request_id, { via: 'ws', kind: 'stream', chunks, end: msg, endAt: Date.now() });
      } else if (msg.type === 'response' || msg.type === 'error') {
        api.complete(msg.request_id, {
          via: 'ws',
          kind: msg.type,
          body: msg,
          frame: isBinary ? 'binary' : 'text',
        });
      }
    });
    ws.on('close', () => api.wsClients.delete(ws));
  };

  api.complete = (requestId, result) => {
    const resolve = api.waiting.get(requestId);
    if (resolve) {
      api.waiting.delete(requestId);
      resolve(result);
    }
  };

  // Prefer a registered WebSocket client; otherwise answer a parked GET /next.
  api.drain = () => {
    while (api.pending.length) {
      const inv = api.pending[0];
      const [ws] = api.wsClients;
      if (ws && inv.binary) {
        // Binary envelope invocation: the header is the message without `payload`.
        api.pending.shift();
        const header = Buffer.from(
          JSON.stringify({
            type: 'invocation',
            request_id: inv.requestId,
            deadline_ms: inv.deadlineMs,
            invoked_function_arn: inv.arn,
            trace_id: inv.traceId,
            client_context: null,
            cognito_identity: null,
          }),
        );
        const len = Buffer.alloc(4);
        len.writeUInt32BE(header.length, 0);
        const body = Buffer.from(inv.rawBody !== undefined ? inv.rawBody : JSON.stringify(inv.event));
        ws.send(Buffer.concat([len, header, body]), { binary: true });
        continue;
      }
      if (ws) {
        api.pending.shift();
        ws.send(
          JSON.stringify({
            type: 'invocation',
            request_id: inv.requestId,
            payload: inv.event,
            deadline_ms: inv.deadlineMs,
            invoked_function_arn: inv.arn,
            trace_id: inv.traceId,
            client_context: inv.clientContext === undefined ? null : inv.clientContext,
            cognito_identity: inv.cognitoIdentity === undefined ? null : inv.cognitoIdentity,
          }),
        );
        continue;
      }
      const res = api.nextWaiters.shift();
      if (!res) return;
      api.pending.shift();
      const headers = {
        'Content-Type': 'application/json',
        'Lambda-Runtime-Aws-Request-Id': inv.requestId,
        'Lambda-Runtime-Deadline-Ms': String(inv.deadlineMs),
        'Lambda-Runtime-Invoked-Function-Arn': inv.arn,
      };
      if (inv.traceId) headers['Lambda-Runtime-Trace-Id'] = inv.traceId;
      if (inv.clientContext) headers['Lambda-Runtime-Client-Context'] = inv.clientContext;
      if (inv.cognitoIdentity) headers['Lambda-Runtime-Cognito-Identity'] = inv.cognitoIdentity;
      const body = inv.rawBody !== undefined ? inv.rawBody : JSON.stringify(inv.event);
      res.writeHead(200, headers).end(body);
    }
  };

  let seq = 0;
  // Returns a promise of the runtime's result ({via, kind, body, ...}).
  api.invoke = (spec = {}) => {
    seq += 1;
    const inv = {
      requestId: spec.requestId || `req-${seq}-${Date.now()}`,
      event: spec.event === undefined ? { n: seq } : spec.event,
      rawBody: spec.rawBody,
      deadlineMs: spec.deadlineMs || Date.now() + 30000,
      arn: spec.arn || 'arn:aws:lambda:local:000000000000:function:test-fn',
      traceId: spec.traceId,
      clientContext: spec.clientContext,
      cognitoIdentity: spec.cognitoIdentity,
      binary: Boolean(spec.binary),
    };
    const promise = new Promise((resolve) => api.waiting.set(inv.requestId, resolve));
    promise.requestId = inv.requestId;
    api.pending.push(inv);
    api.drain();
    return promise;
  };

  api.waitInitError = () =>
    api.initError ? Promise.resolve(api.initError) : new Promise((r) => api.initErrorWaiters.push(r));

  api.sendPing = () => {
    const [ws] = api.wsClients;
    ws.send('{"type":"ping"}');
    return new Promise((r) => api.pongWaiters.push(r));
  };

  api.dropWebSockets = () => {
    for (const ws of api.wsClients) ws.terminate();
    api.wsClients.clear();
  };

  api.close = () => {
    for (const res of api.nextWaiters) res.destroy();
    for (const socket of api.sockets) socket.destroy();
    if (wss) {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
    }
    return new Promise((r) => server.close(() => r()));
  };

  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  api.port = server.address().port;
  return api;
}

// Writes {relativePath: source} into a fresh temp dir and returns its path.
function makeFunctionDir(files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lah-node-rt-'));
  for (const [rel, source] of Object.entries(files)) {
    const file = path.join(dir, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, source);
  }
  return dir;
}

// Spawns `node bootstrap.js` with cwd = taskRoot. env overrides the defaults; a
// value of undefined removes the variable.
function spawnRuntime({ port, taskRoot, handler, env = {} }) {
  const base = { ...process.env };
  delete base.LAMBDA_USE_WEBSOCKET;
  delete base.LAMBDA_RUNTIME_DEBUG;
  const merged = {
    ...base,
    AWS_LAMBDA_RUNTIME_API: `127.0.0.1:${port}`,
    _HANDLER: handler,
    LAMBDA_TASK_ROOT: taskRoot,
    LAMBDA_RUNTIME_DIR: RUNTIME_DIR,
    AWS_LAMBDA_FUNCTION_NAME: 'test-fn',
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
    AWS_LAMBDA_LOG_GROUP_NAME: '/aws/lambda/test-fn',
    AWS_LAMBDA_LOG_STREAM_NAME: '2024/01/01/[$LATEST]abc',
    AWS_REGION: 'us-east-1',
    LAMBDA_INSTANCE_ID: 'inst-42',
    LAMBDA_RUNTIME_NAME: 'nodejs20.x',
    ...env,
  };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const child = spawn(process.execPath, [BOOTSTRAP], {
    cwd: taskRoot,
    env: merged,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdoutText = '';
  child.stderrText = '';
  const watchers = [];
  child.stdout.on('data', (d) => {
    child.stdoutText += d.toString();
    watchers.forEach((w) => w());
  });
  child.stderr.on('data', (d) => {
    child.stderrText += d.toString();
  });
  child.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  child.waitForStdout = (regex) =>
    new Promise((resolve) => {
      const check = () => {
        if (regex.test(child.stdoutText)) resolve(child.stdoutText);
      };
      watchers.push(check);
      check();
    });
  child.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await child.exited;
  };
  return child;
}

// Rejects if `promise` takes longer than ms (keeps a hung runtime from hanging the suite).
function within(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// One function exercising every handler style; event.mode picks the behaviour.
const FIXTURE_HANDLER = `
class ValidationError extends Error {}
const modes = {
  echo: async (event, context) => {
    console.log('echo %s', event.tag);
    console.warn('careful');
    return {
      event,
      trace: process.env._X_AMZN_TRACE_ID,
      remaining: context.getRemainingTimeInMillis(),
      context: {
        awsRequestId: context.awsRequestId,
        functionName: context.functionName,
        functionVersion: context.functionVersion,
        memoryLimitInMB: context.memoryLimitInMB,
        invokedFunctionArn: context.invokedFunctionArn,
        logGroupName: context.logGroupName,
        logStreamName: context.logStreamName,
        clientContext: context.clientContext,
        identity: context.identity,
        callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
      },
    };
  },
  // callback + pending timer: AWS posts only once the event loop is empty
  callbackWaits: (event, context, callback) => {
    const result = { timerRan: false };
    callback(null, result);
    setTimeout(() => { result.timerRan = true; }, 100);
  },
  callbackNoWait: (event, context, callback) => {
    context.callbackWaitsForEmptyEventLoop = false;
    const result = { timerRan: false };
    callback(null, result);
    setTimeout(() => { result.timerRan = true; }, 300);
  },
  // neither promise nor callback: AWS answers null once the loop is empty
  syncNoCallback: () => 'ignored',
  undefinedResult: async () => undefined,
  throwType: () => { throw new TypeError('bad input'); },
  throwString: () => { throw 'plain string'; },
  rejectCustom: async () => { throw new ValidationError('invalid'); },
  crash: (event, context, callback) => { setTimeout(() => { throw new RangeError('async crash'); }, 5); },
};
exports.handler = (event, context, callback) => modes[event.mode || 'echo'](event, context, callback);
`;

// Runs its own small self-test when node --test executes this helper file.
if (require.main === module) {
  const test = require('node:test');
  const assert = require('node:assert/strict');
  test('mock Runtime API hands out /next and records responses', async () => {
    const api = await startMockApi();
    try {
      const result = api.invoke({ event: { hello: 1 }, traceId: 'Root=1' });
      const agent = new http.Agent({ keepAlive: false });
      const next = await new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: api.port, path: '/2018-06-01/runtime/invocation/next', agent }, (res) => {
            readBody(res).then((body) => resolve({ res, body }));
          })
          .on('error', reject);
      });
      assert.equal(next.res.headers['lambda-runtime-aws-request-id'], result.requestId);
      assert.equal(next.res.headers['lambda-runtime-trace-id'], 'Root=1');
      assert.deepEqual(JSON.parse(next.body), { hello: 1 });
      const post = http.request({
        host: '127.0.0.1',
        port: api.port,
        method: 'POST',
        agent,
        path: `/2018-06-01/runtime/invocation/${result.requestId}/response`,
      });
      post.end('{"ok":true}');
      const recorded = await result;
      assert.equal(recorded.kind, 'response');
      assert.deepEqual(recorded.body, { ok: true });
    } finally {
      await api.close();
    }
  });
}

module.exports = {
  FIXTURE_HANDLER,
  decodeEnvelope,
  BOOTSTRAP,
  RUNTIME_DIR,
  WS_SKIP_REASON,
  loadWs,
  makeFunctionDir,
  spawnRuntime,
  startMockApi,
  within,
};
