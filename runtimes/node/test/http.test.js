'use strict';
// End-to-end tests of bootstrap.js in HTTP mode (AWS Runtime API 2018-06-01) against
// the mock Runtime API, with `node bootstrap.js` as a child process.

const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert/strict');
const {
  FIXTURE_HANDLER,
  makeFunctionDir,
  spawnRuntime,
  startMockApi,
  within,
} = require('./mock-runtime-api');

const TIMEOUT_MS = 5000;
const LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t/;

const taskRoot = makeFunctionDir({
  'src/app.js': FIXTURE_HANDLER,
  'bad-export.js': 'exports.other = () => 1;',
});
test.after(() => fs.rmSync(taskRoot, { recursive: true, force: true }));

async function withRuntime(opts, body) {
  const api = await startMockApi({ websocket: opts.websocket || '404' });
  const child = spawnRuntime({ port: api.port, taskRoot, handler: 'src/app.handler', ...opts });
  try {
    await body(api, child);
  } finally {
    await child.stop();
    await api.close();
  }
}

test('HTTP mode: full loop over one keep-alive connection, LAMBDA_USE_WEBSOCKET=false', async () => {
  // The mock serves WebSocket too: the runtime must not even try it.
  await withRuntime({ websocket: 'serve', env: { LAMBDA_USE_WEBSOCKET: 'false' } }, async (api, child) => {
    const deadlineMs = Date.now() + 20000;
    const echo = await within(
      api.invoke({
        event: { mode: 'echo', tag: 'first' },
        deadlineMs,
        traceId: 'Root=1-5759e988-bd862e3fe1be46a994272793',
        clientContext: '{"custom":{"k":"v"}}',
        cognitoIdentity: '{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool"}',
      }),
      TIMEOUT_MS,
      'echo',
    );
    assert.equal(echo.via, 'http');
    assert.equal(echo.kind, 'response');
    assert.equal(echo.contentType, 'application/json');
    const { event, context, trace, remaining } = echo.body;
    assert.deepEqual(event, { mode: 'echo', tag: 'first' });
    assert.equal(trace, 'Root=1-5759e988-bd862e3fe1be46a994272793');
    assert.ok(remaining > 10000 && remaining <= 20000, `remaining ${remaining}`);
    assert.deepEqual(context, {
      awsRequestId: echo.body.context.awsRequestId,
      functionName: 'test-fn',
      functionVersion: '$LATEST',
      memoryLimitInMB: '256',
      invokedFunctionArn: 'arn:aws:lambda:local:000000000000:function:test-fn',
      logGroupName: '/aws/lambda/test-fn',
      logStreamName: '2024/01/01/[$LATEST]abc',
      clientContext: { custom: { k: 'v' } },
      identity: { cognitoIdentityId: 'id-1', cognitoIdentityPoolId: 'pool' },
      callbackWaitsForEmptyEventLoop: true,
    });
    const requestId = context.awsRequestId;
    await within(child.waitForStdout(/careful/), TIMEOUT_MS, 'log lines');
    const lines = child.stdoutText.split('\n');
    const info = lines.find((l) => l.endsWith('echo first'));
    assert.ok(info, child.stdoutText);
    assert.match(info, LOG_LINE);
    assert.equal(info.split('\t')[1], requestId);
    assert.equal(info.split('\t')[2], 'INFO');
    assert.equal(lines.find((l) => l.endsWith('careful')).split('\t')[2], 'WARN');

    const empty = await within(api.invoke({ rawBody: '' }), TIMEOUT_MS, 'empty body');
    assert.deepEqual(empty.body.event, {});

    const undef = await within(api.invoke({ event: { mode: 'undefinedResult' } }), TIMEOUT_MS, 'undefined');
    assert.equal(undef.rawBody, 'null');

    assert.equal(api.wsUpgrades, 0, 'no WebSocket attempt when LAMBDA_USE_WEBSOCKET=false');
    assert.equal(api.tcpConnections, 1, 'all requests reuse one keep-alive connection');
    assert.ok(!child.stdoutText.includes('WebSocket'), child.stdoutText);
  });
});

test('HTTP mode: callback, sync and error handlers behave like AWS', async () => {
  await withRuntime({ env: { LAMBDA_USE_WEBSOCKET: 'false' } }, async (api) => {
    const waits = await within(api.invoke({ event: { mode: 'callbackWaits' } }), TIMEOUT_MS, 'cb');
    assert.deepEqual(waits.body, { timerRan: true }, 'waited for the empty event loop');

    const noWait = await within(api.invoke({ event: { mode: 'callbackNoWait' } }), TIMEOUT_MS, 'cb');
    assert.deepEqual(noWait.body, { timerRan: false }, 'callbackWaitsForEmptyEventLoop=false');

    const sync = await within(api.invoke({ event: { mode: 'syncNoCallback' } }), TIMEOUT_MS, 'sync');
    assert.equal(sync.kind, 'response');
    assert.equal(sync.rawBody, 'null');

    const typeErr = await within(api.invoke({ event: { mode: 'throwType' } }), TIMEOUT_MS, 'throw');
    assert.equal(typeErr.kind, 'error');
    assert.equal(typeErr.errorTypeHeader, 'TypeError');
    assert.equal(typeErr.body.errorType, 'TypeError');
    assert.equal(typeErr.body.errorMessage, 'bad input');
    assert.ok(Array.isArray(typeErr.body.stackTrace));
    assert.equal(typeErr.body.stackTrace[0], 'TypeError: bad input');
    assert.ok(typeErr.body.stackTrace.some((l) => l.includes('app.js')));

    const str = await within(api.invoke({ event: { mode: 'throwString' } }), TIMEOUT_MS, 'string');
    assert.deepEqual(str.body, { errorMessage: 'plain string', errorType: 'string', stackTrace: [] });

    const custom = await within(api.invoke({ event: { mode: 'rejectCustom' } }), TIMEOUT_MS, 'custom');
    assert.equal(custom.body.errorType, 'ValidationError');
    assert.equal(custom.errorTypeHeader, 'ValidationError');

    const after = await within(api.invoke({ event: { mode: 'echo', tag: 'x' } }), TIMEOUT_MS, 'after');
    assert.equal(after.kind, 'response', 'runtime keeps serving after errors');
  });
});

test('HTTP mode: SIGTERM exits with code 0', async () => {
  await withRuntime({ env: { LAMBDA_USE_WEBSOCKET: 'false' } }, async (api, child) => {
    await within(api.invoke({ event: { mode: 'echo' } }), TIMEOUT_MS, 'echo');
    child.kill('SIGTERM');
    assert.deepEqual(await within(child.exited, TIMEOUT_MS, 'exit'), { code: 0, signal: null });
  });
});

test('an uncaught exception fails the invocation and exits 129', async () => {
  await withRuntime({ env: { LAMBDA_USE_WEBSOCKET: 'false' } }, async (api, child) => {
    const crash = await within(api.invoke({ event: { mode: 'crash' } }), TIMEOUT_MS, 'crash');
    assert.equal(crash.kind, 'error');
    assert.equal(crash.body.errorType, 'RangeError');
    assert.equal(crash.body.errorMessage, 'async crash');
    assert.equal((await within(child.exited, TIMEOUT_MS, 'exit')).code, 129);
  });
});

test('init error: missing module posts Runtime.ImportModuleError and exits 1', async () => {
  await withRuntime({ handler: 'nothere/app.handler' }, async (api, child) => {
    const init = await within(api.waitInitError(), TIMEOUT_MS, 'init error');
    assert.equal(init.errorTypeHeader, 'Runtime.ImportModuleError');
    assert.equal(init.body.errorType, 'Runtime.ImportModuleError');
    assert.match(init.body.errorMessage, /Cannot find module 'app'/);
    assert.ok(Array.isArray(init.body.stackTrace));
    assert.equal((await within(child.exited, TIMEOUT_MS, 'exit')).code, 1);
    assert.equal(api.httpNextCount, 0);
  });
});

test('init error: missing export posts Runtime.HandlerNotFound and exits 1', async () => {
  await withRuntime({ handler: 'bad-export.handler' }, async (api, child) => {
    const init = await within(api.waitInitError(), TIMEOUT_MS, 'init error');
    assert.equal(init.errorTypeHeader, 'Runtime.HandlerNotFound');
    assert.deepEqual(
      { type: init.body.errorType, message: init.body.errorMessage },
      { type: 'Runtime.HandlerNotFound', message: 'bad-export.handler is undefined or not exported' },
    );
    assert.equal((await within(child.exited, TIMEOUT_MS, 'exit')).code, 1);
  });
});

test('an instance socket that does not answer leaves TCP, over HTTP and over WebSocket', async () => {
  // LAMBDA_RUNTIME_API_SOCKET names an abstract socket nobody listens on: the runtime serves
  // over AWS_LAMBDA_RUNTIME_API as without it (WebSocket included: no fallback to HTTP).
  const missing = `@lambda-at-home-test/none/${process.pid}-${Date.now()}`;
  for (const ws of ['false', 'true']) {
    const env = { LAMBDA_USE_WEBSOCKET: ws, LAMBDA_RUNTIME_API_SOCKET: missing };
    await withRuntime({ websocket: 'serve', env }, async (api) => {
      for (const tag of ['first', 'second']) {
        const echo = await within(api.invoke({ event: { mode: 'echo', tag } }), TIMEOUT_MS, tag);
        assert.equal(echo.via, ws === 'true' ? 'ws' : 'http');
        const result = ws === 'true' ? echo.body.payload : echo.body;
        assert.deepEqual(result.event, { mode: 'echo', tag });
      }
    });
  }
});
