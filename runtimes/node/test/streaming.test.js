'use strict';
// Response streaming in the Node runtime: the awslambda global (streamifyResponse,
// HttpResponseStream) and invokeStreaming on a recording sink, then `node bootstrap.js`
// streaming to the mock Runtime API over HTTP (chunked /response in streaming mode, error
// trailers) and over WebSocket (response_chunk envelopes, response_end).

const fs = require('node:fs');
const test = require('node:test');
const assert = require('node:assert/strict');
const common = require('../runtime-common');
const {
  WS_SKIP_REASON,
  loadWs,
  makeFunctionDir,
  spawnRuntime,
  startMockApi,
  within,
} = require('./mock-runtime-api');

const TIMEOUT_MS = 10000;
const PAUSE_MS = 400;

const STREAMING_HANDLER = `
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.mode === 'early') throw new RangeError('before any byte');
  responseStream.setContentType('text/plain');
  responseStream.write('first;');
  await new Promise((r) => setTimeout(r, ${PAUSE_MS}));
  if (event.mode === 'throw') throw new TypeError('mid-stream');
  responseStream.write(Buffer.from('second:' + context.awsRequestId));
  responseStream.end();
});
`;

const taskRoot = makeFunctionDir({ 'index.js': STREAMING_HANDLER });
test.after(() => fs.rmSync(taskRoot, { recursive: true, force: true }));

function recordingSink() {
  const events = [];
  return {
    events,
    start(contentType) {
      events.push(['start', contentType]);
    },
    write(buf) {
      events.push(['write', Buffer.from(buf).toString()]);
      return Promise.resolve();
    },
  };
}

const inv = (event) => ({ requestId: 'r-1', deadlineMs: Date.now() + 5000, event });

test('streamifyResponse marks the handler; the global is installed', () => {
  common.installAwsLambdaGlobal();
  const handler = globalThis.awslambda.streamifyResponse(async () => {});
  assert.equal(common.isStreamingHandler(handler), true);
  assert.equal(common.isStreamingHandler(async () => {}), false);
  assert.equal(handler[Symbol.for('aws.lambda.runtime.handler.streaming')], 'response');
});

test('invokeStreaming: content type before the first byte, writes in order, end', async () => {
  const sink = recordingSink();
  const handler = common.streamifyResponse(async (event, stream) => {
    stream.setContentType('application/x-ndjson');
    stream.write('a');
    await new Promise((r) => setTimeout(r, 5));
    stream.write(Buffer.from('b'));
    stream.end('c');
  });
  const outcome = await common.invokeStreaming(handler, common.readConfig({}), inv({}), sink);
  assert.deepEqual(outcome, { ok: true, result: null });
  assert.deepEqual(sink.events, [
    ['start', 'application/x-ndjson'],
    ['write', 'a'],
    ['write', 'b'],
    ['write', 'c'],
  ]);
});

test('invokeStreaming: an empty stream still starts; setContentType after a write throws', async () => {
  const sink = recordingSink();
  const outcome = await common.invokeStreaming(
    common.streamifyResponse(async (e, stream) => stream.end()),
    common.readConfig({}),
    inv({}),
    sink,
  );
  assert.equal(outcome.ok, true);
  assert.deepEqual(sink.events, [['start', 'application/octet-stream']]);
  const late = recordingSink();
  const failed = await common.invokeStreaming(
    common.streamifyResponse(async (e, stream) => {
      stream.write('x');
      stream.setContentType('text/plain');
    }),
    common.readConfig({}),
    inv({}),
    late,
  );
  assert.equal(failed.ok, false);
  assert.match(failed.error.errorMessage, /content type/);
});

test('invokeStreaming: a rejection mid-stream is the outcome', async () => {
  const sink = recordingSink();
  const outcome = await common.invokeStreaming(
    common.streamifyResponse(async (e, stream) => {
      stream.write('partial');
      throw new TypeError('oops');
    }),
    common.readConfig({}),
    inv({}),
    sink,
  );
  assert.equal(outcome.ok, false);
  assert.equal(outcome.error.errorType, 'TypeError');
  assert.equal(outcome.error.errorMessage, 'oops');
});

test('HttpResponseStream.from writes the prelude and 8 NUL bytes first', async () => {
  const sink = recordingSink();
  const chunks = [];
  sink.write = (buf) => {
    chunks.push(Buffer.from(buf));
    return Promise.resolve();
  };
  await common.invokeStreaming(
    common.streamifyResponse(async (e, responseStream) => {
      const stream = common.HttpResponseStream.from(responseStream, { statusCode: 202 });
      stream.end('body');
    }),
    common.readConfig({}),
    inv({}),
    sink,
  );
  assert.deepEqual(sink.events, [['start', common.HTTP_INTEGRATION_CONTENT_TYPE]]);
  const all = Buffer.concat(chunks);
  const prelude = '{"statusCode":202}';
  assert.equal(all.subarray(0, prelude.length).toString(), prelude);
  assert.deepEqual([...all.subarray(prelude.length, prelude.length + 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(all.subarray(prelude.length + 8).toString(), 'body');
});

async function withRuntime(opts, body) {
  const api = await startMockApi({ websocket: opts.websocket || '404' });
  const child = spawnRuntime({ port: api.port, taskRoot, handler: 'index.handler', env: opts.env || {} });
  try {
    await body(api, child);
  } finally {
    await child.stop();
    await api.close();
  }
}

test('HTTP: a streamed /response, chunk by chunk, with error trailers when it fails', async () => {
  await withRuntime({ env: { LAMBDA_USE_WEBSOCKET: 'false' } }, async (api) => {
    const ok = api.invoke({ event: {} });
    const got = await within(ok, TIMEOUT_MS, 'stream');
    assert.equal(got.streamMode, 'streaming');
    assert.equal(got.transferEncoding, 'chunked');
    assert.equal(got.contentType, 'text/plain');
    assert.equal(got.rawBody, `first;second:${ok.requestId}`);
    const first = got.pieces[0];
    const last = got.pieces[got.pieces.length - 1];
    assert.equal(first.data.toString(), 'first;');
    assert.ok(last.at - first.at >= PAUSE_MS - 100, `pieces ${last.at - first.at} ms apart`);
    assert.deepEqual(got.trailers, {});

    const failed = await within(api.invoke({ event: { mode: 'throw' } }), TIMEOUT_MS, 'throw');
    assert.equal(failed.rawBody, 'first;');
    assert.equal(failed.trailers['lambda-runtime-function-error-type'], 'TypeError');
    const doc = JSON.parse(Buffer.from(failed.trailers['lambda-runtime-function-error-body'], 'base64'));
    assert.equal(doc.errorMessage, 'mid-stream');

    // A failure before the first byte is an ordinary /error.
    const early = await within(api.invoke({ event: { mode: 'early' } }), TIMEOUT_MS, 'early');
    assert.equal(early.kind, 'error');
    assert.equal(early.body.errorType, 'RangeError');
  });
});

const ws = loadWs();

test('WebSocket: response_chunk envelopes as written, then response_end', { skip: ws ? false : WS_SKIP_REASON }, async () => {
  await withRuntime({ websocket: 'serve', env: { LAMBDA_WS_CLIENT: 'builtin' } }, async (api) => {
    const ok = api.invoke({ event: {} });
    const got = await within(ok, TIMEOUT_MS, 'stream');
    assert.equal(got.kind, 'stream');
    assert.equal(got.chunks[0].msg.content_type, 'text/plain');
    assert.equal(got.chunks[1].msg.content_type, undefined);
    assert.equal(Buffer.concat(got.chunks.map((c) => c.data)).toString(), `first;second:${ok.requestId}`);
    assert.ok(got.chunks[1].at - got.chunks[0].at >= PAUSE_MS - 100);
    assert.equal(got.end.error_type, undefined);

    const failed = await within(api.invoke({ event: { mode: 'throw' } }), TIMEOUT_MS, 'throw');
    assert.equal(failed.end.error_type, 'TypeError');
    assert.equal(failed.end.error_message, 'mid-stream');
    const early = await within(api.invoke({ event: { mode: 'early' } }), TIMEOUT_MS, 'early');
    assert.equal(early.kind, 'error');
    assert.equal(early.body.error_type, 'RangeError');
  });
});
