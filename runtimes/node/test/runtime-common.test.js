'use strict';
// In-process tests of runtime-common.js: handler loading, error formatting,
// invocation semantics and the context object.

const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert/strict');
const common = require('../runtime-common');
const { makeFunctionDir } = require('./mock-runtime-api');

const CONFIG = common.readConfig({
  AWS_LAMBDA_FUNCTION_NAME: 'fn',
  AWS_LAMBDA_FUNCTION_VERSION: '7',
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '512',
  AWS_LAMBDA_LOG_GROUP_NAME: '/aws/lambda/fn',
  AWS_LAMBDA_LOG_STREAM_NAME: 'stream',
});

function inv(event, extra = {}) {
  return {
    requestId: 'req-1',
    deadlineMs: Date.now() + 10000,
    invokedFunctionArn: 'arn:aws:lambda:local:000000000000:function:fn',
    event,
    ...extra,
  };
}

const dir = makeFunctionDir({
  'index.js': 'exports.handler = async (e) => ({ from: "index", e });\nexports.nested = { fn: () => 1 };\nexports.notFn = 42;',
  'src/app.js': 'exports.handler = async () => "subfolder";',
  'esm/app.mjs': 'export const handler = async () => "esm";\nawait Promise.resolve();',
  'cjs/app.cjs': 'module.exports.handler = async () => "cjs";',
  'typed/package.json': '{"type":"module"}',
  'typed/app.js': 'export async function handler() { return "typed-esm"; }',
  'dirmod/index.js': 'exports.handler = () => "dir index";',
  'broken.js': 'exports.handler = async () => {',
  'throws.js': 'class BootError extends Error {}\nthrow new BootError("init failed");',
  'needsdep.js': 'require("definitely-not-installed-pkg");\nexports.handler = () => 1;',
});
test.after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('parseHandlerString splits folder, module and export path', () => {
  assert.deepEqual(common.parseHandlerString('src/app.handler'), {
    moduleRoot: 'src/',
    moduleName: 'app',
    handlerPath: 'handler',
  });
  assert.deepEqual(common.parseHandlerString('index.handlers.main'), {
    moduleRoot: '',
    moduleName: 'index',
    handlerPath: 'handlers.main',
  });
  assert.throws(() => common.parseHandlerString('nodot'), { name: 'Runtime.MalformedHandlerName' });
});

test('loadHandler resolves .js, subfolders, .mjs, .cjs, type:module, directories and nested exports', async () => {
  assert.equal(await (await common.loadHandler('src/app.handler', dir))(), 'subfolder');
  assert.equal(await (await common.loadHandler('esm/app.handler', dir))(), 'esm');
  assert.equal(await (await common.loadHandler('cjs/app.handler', dir))(), 'cjs');
  assert.equal(await (await common.loadHandler('typed/app.handler', dir))(), 'typed-esm');
  assert.equal((await common.loadHandler('dirmod.handler', dir))(), 'dir index');
  assert.equal((await common.loadHandler('index.nested.fn', dir))(), 1);
  assert.deepEqual(await (await common.loadHandler('index.handler', dir))(3), { from: 'index', e: 3 });
});

test('loadHandler reports AWS error types', async () => {
  await assert.rejects(common.loadHandler('missing.handler', dir), (err) => {
    assert.equal(err.name, 'Runtime.ImportModuleError');
    assert.match(err.message, /^Error: Cannot find module 'missing'/);
    return true;
  });
  await assert.rejects(common.loadHandler('needsdep.handler', dir), (err) => {
    assert.equal(err.name, 'Runtime.ImportModuleError');
    assert.match(err.message, /definitely-not-installed-pkg/);
    return true;
  });
  await assert.rejects(common.loadHandler('index.nope', dir), {
    name: 'Runtime.HandlerNotFound',
    message: 'index.nope is undefined or not exported',
  });
  await assert.rejects(common.loadHandler('index.notFn', dir), {
    name: 'Runtime.HandlerNotFound',
    message: 'index.notFn is not a function',
  });
  await assert.rejects(common.loadHandler('broken.handler', dir), {
    name: 'Runtime.UserCodeSyntaxError',
  });
  await assert.rejects(common.loadHandler('throws.handler', dir), (err) => {
    assert.equal(common.formatError(err).errorType, 'BootError');
    assert.equal(err.message, 'init failed');
    return true;
  });
});

test('formatError gives class names, messages and stack lines', () => {
  const te = common.formatError(new TypeError('bad type'));
  assert.equal(te.errorType, 'TypeError');
  assert.equal(te.errorMessage, 'bad type');
  assert.equal(te.stackTrace[0], 'TypeError: bad type');
  assert.match(te.stackTrace[1], /^\s+at /);
  class ValidationError extends Error {}
  assert.equal(common.formatError(new ValidationError('v')).errorType, 'ValidationError');
  assert.equal(common.formatError(new Error('e')).errorType, 'Error');
  assert.deepEqual(common.formatError('just a string'), {
    errorMessage: 'just a string',
    errorType: 'string',
    stackTrace: [],
  });
  assert.deepEqual(common.formatError({ code: 1 }), {
    errorMessage: '{"code":1}',
    errorType: 'object',
    stackTrace: [],
  });
  const rt = common.formatError(new common.RuntimeError('Runtime.HandlerNotFound', 'x'));
  assert.equal(rt.errorType, 'Runtime.HandlerNotFound');
});

test('invoke: async result, rejection and thrown errors', async () => {
  assert.deepEqual(await common.invoke(async (e) => e.a + 1, CONFIG, inv({ a: 1 })), {
    ok: true,
    result: 2,
  });
  const rejected = await common.invoke(async () => {
    throw new RangeError('out');
  }, CONFIG, inv({}));
  assert.equal(rejected.ok, false);
  assert.equal(rejected.error.errorType, 'RangeError');
  assert.equal(rejected.error.errorMessage, 'out');
  const thrown = await common.invoke(() => {
    throw 'plain';
  }, CONFIG, inv({}));
  assert.deepEqual(thrown, { ok: false, error: { errorMessage: 'plain', errorType: 'string', stackTrace: [] } });
  const rejectedEmpty = await common.invoke(() => Promise.reject(), CONFIG, inv({}));
  assert.equal(rejectedEmpty.error.errorMessage, 'handled');
});

test('invoke: callback handlers, first call wins', async () => {
  const viaCallback = await common.invoke(
    (event, context, callback) => {
      context.callbackWaitsForEmptyEventLoop = false;
      setTimeout(() => {
        callback(null, { got: event.x });
        callback(new Error('ignored second call'));
      }, 5);
    },
    CONFIG,
    inv({ x: 'y' }),
  );
  assert.deepEqual(viaCallback, { ok: true, result: { got: 'y' } });
  const viaError = await common.invoke((e, c, cb) => cb(new Error('cb failed')), CONFIG, inv({}));
  assert.equal(viaError.error.errorMessage, 'cb failed');
  const viaSucceed = await common.invoke((e, c) => c.succeed('ok'), CONFIG, inv({}));
  assert.deepEqual(viaSucceed, { ok: true, result: 'ok' });
  const viaFail = await common.invoke((e, c) => c.fail(new Error('f')), CONFIG, inv({}));
  assert.equal(viaFail.error.errorType, 'Error');
});

test('invoke: context carries AWS fields and sets the trace id', async () => {
  const outcome = await common.invoke(
    async (event, context) => ({
      ...context,
      remaining: context.getRemainingTimeInMillis(),
      trace: process.env._X_AMZN_TRACE_ID,
    }),
    CONFIG,
    inv({}, {
      traceId: 'Root=1-abc',
      clientContext: '{"custom":{"k":"v"}}',
      cognitoIdentity: '{"cognitoIdentityId":"id-1"}',
    }),
  );
  const c = outcome.result;
  assert.equal(c.awsRequestId, 'req-1');
  assert.equal(c.functionName, 'fn');
  assert.equal(c.functionVersion, '7');
  assert.equal(c.memoryLimitInMB, '512');
  assert.equal(c.logGroupName, '/aws/lambda/fn');
  assert.equal(c.logStreamName, 'stream');
  assert.equal(c.invokedFunctionArn, 'arn:aws:lambda:local:000000000000:function:fn');
  assert.equal(c.callbackWaitsForEmptyEventLoop, true);
  assert.deepEqual(c.clientContext, { custom: { k: 'v' } });
  assert.deepEqual(c.identity, { cognitoIdentityId: 'id-1' });
  assert.ok(c.remaining > 5000 && c.remaining <= 10000, `remaining ${c.remaining}`);
  assert.equal(c.trace, 'Root=1-abc');
  for (const fn of ['done', 'succeed', 'fail']) assert.equal(typeof c[fn], 'function');
});

test('serializeResult: undefined is null, unserialisable results are errors', () => {
  assert.equal(common.serializeResult(undefined), 'null');
  assert.equal(common.serializeResult({ a: [1] }), '{"a":[1]}');
  assert.throws(() => common.serializeResult(10n), { name: 'Runtime.SerializationError' });
});

test('formatLogLine matches the AWS console format', () => {
  const line = common.formatLogLine('INFO', ['hello %s', 'world\nnext']);
  assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t\S+\tINFO\thello world\rnext\n$/);
});

test('patchConsole with AWS_LAMBDA_LOG_FORMAT=JSON writes AWS JSON records, filtered by level', () => {
  const saved = {};
  for (const m of ['log', 'info', 'warn', 'error', 'debug', 'trace', 'fatal']) saved[m] = console[m];
  const write = process.stdout.write;
  const lines = [];
  process.stdout.write = (chunk) => {
    lines.push(String(chunk));
    return true;
  };
  try {
    common.patchConsole({ AWS_LAMBDA_LOG_FORMAT: 'JSON', AWS_LAMBDA_LOG_LEVEL: 'WARN' });
    console.info('hidden');
    console.debug('hidden');
    console.warn('shown %d', 1);
    console.error(new TypeError('bad\nthing'));
    console.fatal('last');
  } finally {
    process.stdout.write = write;
    Object.assign(console, saved);
  }
  const records = lines.map((l) => JSON.parse(l));
  assert.deepEqual(
    records.map((r) => [r.level, r.message.split('\n')[0]]),
    [['WARN', 'shown 1'], ['ERROR', 'TypeError: bad'], ['FATAL', 'last']],
  );
  assert.match(records[0].timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.equal(records[1].errorType, 'TypeError');
  assert.equal(records[1].errorMessage, 'bad\nthing');
  assert.ok(Array.isArray(records[1].stackTrace));
  assert.ok(lines.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1));
});
