'use strict';
// End-to-end tests of the WebSocket transport (bootstrap-websocket.js) and of the
// fallbacks to HTTP, with `node bootstrap.js` as a child process. Tests that need the
// `ws` package skip with a message when it cannot be required.

const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const {
  FIXTURE_HANDLER,
  RUNTIME_DIR,
  WS_SKIP_REASON,
  loadWs,
  makeFunctionDir,
  spawnRuntime,
  startMockApi,
  within,
} = require('./mock-runtime-api');

const TIMEOUT_MS = 5000;
const wsSkip = loadWs() ? false : WS_SKIP_REASON;
const taskRoot = makeFunctionDir({ 'index.js': FIXTURE_HANDLER });
test.after(() => fs.rmSync(taskRoot, { recursive: true, force: true }));

async function withRuntime(mockOptions, env, body) {
  const api = await startMockApi(mockOptions);
  const child = spawnRuntime({ port: api.port, taskRoot, handler: 'index.handler', env });
  try {
    await body(api, child);
  } finally {
    await child.stop();
    await api.close();
  }
}

test('WebSocket mode: a server that takes the registration from the upgrade request gets no register message', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve', takeHeaderRegistration: true }, {}, async (api) => {
    const echo = await within(api.invoke({ event: { mode: 'echo', tag: 'h' } }), TIMEOUT_MS, 'echo');
    assert.equal(echo.via, 'ws');
    assert.deepEqual(echo.body.payload.event, { mode: 'echo', tag: 'h' });
    assert.deepEqual(api.registers, [
      {
        type: 'register',
        function_name: 'test-fn',
        runtime: 'nodejs20.x',
        version: '$LATEST',
        instance_id: 'inst-42',
        by_header: true,
      },
    ]);
  });
});

test('registerHeaders: only values that can travel in a header line', () => {
  const { registerHeaders } = require('../bootstrap-websocket');
  const config = { instanceId: 'i-1', runtimeName: 'nodejs20.x', functionVersion: '$LATEST' };
  assert.deepEqual(registerHeaders(config), [
    'Lambda-Runtime-Instance-Id: i-1',
    'Lambda-Runtime-Name: nodejs20.x',
    'Lambda-Runtime-Function-Version: $LATEST',
  ]);
  assert.deepEqual(registerHeaders({ ...config, instanceId: '' }), []);
  assert.deepEqual(registerHeaders({ ...config, runtimeName: 'x\r\nEvil: 1' }), []);
});

test('WebSocket mode: register, invocations, errors, ping/pong, no HTTP polling', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve' }, { LAMBDA_RUNTIME_DEBUG: '1' }, async (api, child) => {
    const deadlineMs = Date.now() + 15000;
    const echo = await within(
      api.invoke({
        event: { mode: 'echo', tag: 'ws' },
        deadlineMs,
        traceId: 'Root=1-ws',
        clientContext: '{"custom":{"a":1}}',
      }),
      TIMEOUT_MS,
      'echo',
    );
    assert.equal(api.lastUpgradeUrl, '/2018-06-01/runtime/websocket?fn=test-fn');
    assert.deepEqual(api.registers, [
      {
        type: 'register',
        function_name: 'test-fn',
        runtime: 'nodejs20.x',
        version: '$LATEST',
        instance_id: 'inst-42',
      },
    ]);
    // It offered the registration in the upgrade request too; a server that does not take it
    // (this one) gets the `register` message.
    assert.equal(api.lastUpgradeHeaders['lambda-runtime-instance-id'], 'inst-42');
    assert.equal(echo.via, 'ws');
    assert.equal(echo.frame, 'binary', 'responses travel as binary envelopes');
    assert.equal(echo.body.type, 'response');
    assert.equal(echo.body.request_id, echo.body.payload.context.awsRequestId);
    assert.deepEqual(echo.body.headers, { 'X-Amz-Executed-Version': '$LATEST' });
    const { payload } = echo.body;
    assert.deepEqual(payload.event, { mode: 'echo', tag: 'ws' });
    assert.equal(payload.trace, 'Root=1-ws');
    assert.deepEqual(payload.context.clientContext, { custom: { a: 1 } });
    assert.ok(payload.remaining > 5000 && payload.remaining <= 15000, 'deadline_ms is absolute');

    const err = await within(api.invoke({ event: { mode: 'throwType' } }), TIMEOUT_MS, 'error');
    assert.equal(err.body.type, 'error');
    assert.equal(err.frame, 'text');
    assert.equal(err.body.error_type, 'TypeError');
    assert.equal(err.body.error_message, 'bad input');
    assert.equal(err.body.stack_trace[0], 'TypeError: bad input');
    assert.deepEqual(err.body.headers, { 'X-Amz-Function-Error': 'Unhandled' });

    // Same empty-event-loop semantics as HTTP: the socket must not hold the loop open.
    const waits = await within(api.invoke({ event: { mode: 'callbackWaits' } }), TIMEOUT_MS, 'cb');
    assert.deepEqual(waits.body.payload, { timerRan: true });
    const sync = await within(api.invoke({ event: { mode: 'syncNoCallback' } }), TIMEOUT_MS, 'sync');
    assert.equal(sync.body.payload, null);

    await within(api.sendPing(), TIMEOUT_MS, 'pong');
    assert.equal(api.pongs, 1);
    assert.equal(api.httpNextCount, 0, 'no HTTP polling while WebSocket works');

    await within(child.waitForStdout(/Posted response for: /), TIMEOUT_MS, 'debug lines');
    assert.match(child.stdoutText, /^WebSocket connected$/m);
    assert.match(child.stdoutText, new RegExp(`^Got invocation: ${echo.body.request_id}$`, 'm'));
    assert.match(child.stdoutText, new RegExp(`^Posted response for: ${echo.body.request_id}$`, 'm'));
  });
});

test('WebSocket mode: reconnects after a drop and keeps serving over WebSocket', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve' }, {}, async (api, child) => {
    const first = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'first');
    assert.equal(first.via, 'ws');
    api.dropWebSockets();
    const second = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'second');
    assert.equal(second.via, 'ws');
    assert.equal(api.registers.length, 2, 'registered again after reconnecting');
    assert.equal(api.httpNextCount, 0);
    assert.equal(child.stdoutText.includes('WebSocket connected'), false, 'debug lines off by default');
  });
});

test('fallback: WebSocket endpoint answers 404 -> HTTP', async () => {
  await withRuntime({ websocket: '404' }, {}, async (api, child) => {
    const result = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'invoke');
    assert.equal(result.via, 'http');
    assert.equal(result.kind, 'response');
    // The built-in client needs no package, so the attempt is made whatever is installed.
    assert.equal(api.wsUpgrades, 1);
    assert.match(
      child.stdoutText,
      /^WebSocket connection failed \(Unexpected server response: 404\), falling back to HTTP$/m,
    );
  });
});

test('fallback: error_response before the first invocation -> HTTP', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve', errorResponse: true }, {}, async (api, child) => {
    const result = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'invoke');
    assert.equal(result.via, 'http');
    assert.equal(api.registers.length, 1);
    assert.match(child.stdoutText, /^WebSocket error_response REJECTED: nope$/m);
    assert.match(
      child.stdoutText,
      /^WebSocket connection failed \(error_response REJECTED: nope\), falling back to HTTP$/m,
    );
  });
});

// Whether `ws` resolves for the runtime even without NODE_PATH (e.g. npm install was
// run in runtimes/node): then "ws missing" cannot be simulated.
function wsResolvableWithoutNodePath() {
  const probe = spawnSync(process.execPath, ['-e', 'require.resolve("ws")'], {
    cwd: RUNTIME_DIR,
    env: { ...process.env, NODE_PATH: '' },
  });
  return probe.status === 0;
}

test('fallback: LAMBDA_WS_CLIENT=library and ws package missing (empty NODE_PATH) -> HTTP', async (t) => {
  if (wsResolvableWithoutNodePath()) {
    t.skip('ws is installed next to the runtime; cannot simulate a missing ws package');
    return;
  }
  const env = { NODE_PATH: '', LAMBDA_WS_CLIENT: 'library' };
  await withRuntime({ websocket: 'serve' }, env, async (api, child) => {
    const result = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'invoke');
    assert.equal(result.via, 'http');
    assert.equal(api.wsUpgrades, 0);
    const lines = child.stdoutText.split('\n').filter((l) => l.includes('WebSocket'));
    assert.deepEqual(lines, ['WebSocket unavailable (ws package not found), falling back to HTTP']);
  });
});

test('built-in client: no ws package needed (empty NODE_PATH), binary envelopes both ways', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve' }, { NODE_PATH: '' }, async (api, child) => {
    const text = await within(api.invoke({ event: { mode: 'echo', n: 1 } }), TIMEOUT_MS, 'text');
    assert.equal(text.via, 'ws');
    assert.deepEqual(text.body.payload.event, { mode: 'echo', n: 1 });
    // An invocation sent as a binary envelope (what `"binary": true` asks for) is understood.
    const bin = await within(
      api.invoke({ event: { mode: 'echo', s: 'é✓'.repeat(40000) }, binary: true }),
      TIMEOUT_MS,
      'binary invocation',
    );
    assert.equal(bin.via, 'ws');
    assert.equal(bin.frame, 'binary');
    assert.equal(bin.body.payload.event.s, 'é✓'.repeat(40000));
    assert.equal(bin.body.payload.context.awsRequestId, bin.body.request_id);
    // Large results (> 64 KiB: 64-bit frame lengths) arrive intact, byte for byte.
    assert.ok(bin.body.envelope.rawPayload.length > 65536);
    assert.equal(api.httpNextCount, 0);
    assert.equal(child.stdoutText.includes('falling back'), false);
  });
});

test('LAMBDA_WS_CLIENT=library uses the ws package with the same messages', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve' }, { LAMBDA_WS_CLIENT: 'library' }, async (api) => {
    const echo = await within(api.invoke({ event: { mode: 'echo', via: 'ws' } }), TIMEOUT_MS, 'echo');
    assert.equal(echo.via, 'ws');
    assert.equal(echo.frame, 'binary');
    assert.deepEqual(echo.body.payload.event, { mode: 'echo', via: 'ws' });
    const bin = await within(api.invoke({ event: { mode: 'echo' }, binary: true }), TIMEOUT_MS, 'bin');
    assert.deepEqual(bin.body.payload.event, { mode: 'echo' });
    await within(api.sendPing(), TIMEOUT_MS, 'pong');
    assert.equal(api.registers.length, 1);
  });
});

test('reconnect gives up after 10 refused attempts with backoff, then falls back to HTTP', { skip: wsSkip }, async () => {
  await withRuntime({ websocket: 'serve' }, {}, async (api, child) => {
    const first = await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'first');
    assert.equal(first.via, 'ws');
    api.refuseUpgrades = true;
    const droppedAt = Date.now();
    api.dropWebSockets();
    // Backoff 50, 100, ... ms capped at 2 s: about 11 s for 10 attempts.
    const second = await within(api.invoke({ event: { mode: 'echo' } }), 20000, 'after giving up');
    const waitedMs = Date.now() - droppedAt;
    assert.equal(second.via, 'http');
    assert.equal(api.wsUpgrades, 11, 'the first connection and 10 reconnection attempts');
    assert.ok(waitedMs >= 9000, `gave up after ${waitedMs} ms, backoff too short`);
    assert.match(
      child.stdoutText,
      /^WebSocket connection failed \(gave up reconnecting after 10 attempts: Unexpected server response: 404\), falling back to HTTP$/m,
    );
  });
});
