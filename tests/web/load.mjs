#!/usr/bin/env node
// Load ONNX Runtime training artifact sets in onnxruntime-web's training build (1.17.3, 1.18.0,
// 1.19.2) in headless Chromium, optionally train a few steps, and print one JSON line per
// (version, set). See tests/web/README.md.
//
//   node tests/web/load.mjs --version 1.19 DIR...
//   node tests/web/load.mjs --version 1.17,1.18,1.19 --data data.json --steps 3 DIR...
//   node tests/web/load.mjs --version 1.19 --manifest sets.json
//
// Options:
//   --version V[,V...]   web versions (1.17, 1.18, 1.19; repeatable); one browser for all of them,
//                        one page per version, every set loaded in that page in turn (a fresh page
//                        after a C++ exception or a WASM trap, which leave the runtime unsound)
//   --data FILE          JSON {"steps": [[feeds, ...], ...], "eval"?: feeds} for every DIR;
//                        feeds: {inputName: {"type": "float32"|"int64"|..., "dims": [..], "data": [..]}}
//   --steps N            train only the first N steps of --data (0: load only)
//   --parameters WHICH   "trainable" or "all": getContiguousParameters after load and every step
//   --threads N          ort.env.wasm.numThreads (default 1; 1.19 only: 1.17 and 1.18 have no
//                        threaded training build and always run with 1)
//   --session-options J  JSON SessionOptions for TrainingSession.create (e.g. {"executionMode":"parallel"})
//   --manifest FILE      JSON [{"dir", "name"?, "steps"?, "eval"?, "parameters"?, "sessionOptions"?,
//                        "versions"?, "sync"?}] instead of DIRs: per set data and options; "versions"
//                        limits the set to those of --version; "sync": true calls the Lookahead
//                        module's syncParameters after load and after every step (page/harness.js)
//   --lookahead-module F onnx-lookahead-web.mjs, served to the page for the sets with "sync"
//   --timeout S          per set (default 120)
//   --jobs N             versions run side by side, each in its own page (default 1: one after
//                        another; on 2 cores side by side is not faster)
//   --chromium PATH      the browser (default $CHROMIUM or /usr/bin/chromium); nothing is downloaded
//
// Each line: {"version", "ort", "threads", "set", "dir", "loads": true|false|null, "error", "errorCode",
// "losses"?, "evals"?, "parameters"?, "parametersError"?, "syncs"?, "syncError"?, "runError"?,
// "runErrorAt"?, "releaseError"?, "unsound"? (the next set got a fresh page), "ms", "browser",
// "console"? (what the page logged meanwhile)}. "error" is ORT's message; where ORT threw a C++ exception (a bare number in
// JavaScript, kept in "errorCode") it is the message read from the WASM memory, best effort.
// Non-finite numbers are written as the strings "NaN", "Infinity", "-Infinity".
// Exit status: 0 when every set was tried (whether it loaded or not), 1 on a harness failure.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

import { LOOKAHEAD_MODULE_URL, startServer, VERSIONS } from './server.mjs';

// The flags that work on this kind of machine (no network but loopback). Playwright adds a fresh
// temporary profile (--user-data-dir) of its own and --headless.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];
const SUFFIXES = {
  trainModel: 'training_model.onnx',
  evalModel: 'eval_model.onnx',
  optimizerModel: 'optimizer_model.onnx',
  checkpointState: 'checkpoint',
};

function usage(message) {
  console.error(`load.mjs: ${message}\nusage: node tests/web/load.mjs --version 1.19[,1.18,...] [--data FILE] [--steps N] [--parameters trainable|all] DIR...\n       node tests/web/load.mjs --version 1.19 --manifest FILE`);
  process.exit(2);
}

/** The four files of an artifact set (a prefix such as "my_" before the usual names is allowed). */
async function artifactFiles(dir) {
  const names = await readdir(dir);
  const files = {};
  for (const [key, suffix] of Object.entries(SUFFIXES)) {
    const found = names.filter((n) => n.endsWith(suffix));
    if (found.length > 1) throw new Error(`${dir}: more than one *${suffix}: ${found.join(', ')}`);
    if (found.length) files[key] = found[0];
  }
  for (const key of ['trainModel', 'checkpointState']) {
    if (!files[key]) throw new Error(`${dir}: no *${SUFFIXES[key]}`);
  }
  return files;
}

const finite = (_, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v);

async function main() {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      version: { type: 'string', multiple: true },
      data: { type: 'string' },
      steps: { type: 'string' },
      parameters: { type: 'string' },
      threads: { type: 'string', default: '1' },
      'session-options': { type: 'string' },
      manifest: { type: 'string' },
      'lookahead-module': { type: 'string' },
      timeout: { type: 'string', default: '120' },
      jobs: { type: 'string' },
      chromium: { type: 'string', default: process.env.CHROMIUM || '/usr/bin/chromium' },
    },
  });
  const versions = (values.version || []).flatMap((v) => v.split(',')).filter(Boolean);
  if (!versions.length) usage('--version is required');
  for (const v of versions) if (!VERSIONS[v]) usage(`unknown version ${v} (known: ${Object.keys(VERSIONS).join(', ')})`);
  if (values.parameters && !['trainable', 'all'].includes(values.parameters)) usage('--parameters: trainable or all');

  // The sets and what to do with each.
  let entries;
  if (values.manifest) {
    if (positionals.length) usage('--manifest or DIRs, not both');
    entries = JSON.parse(await readFile(values.manifest, 'utf8'));
  } else {
    if (!positionals.length) usage('no DIR');
    const data = values.data ? JSON.parse(await readFile(values.data, 'utf8')) : {};
    const n = values.steps === undefined ? undefined : Number(values.steps);
    if (n !== undefined && !(Number.isInteger(n) && n >= 0)) usage('--steps: a whole number');
    const steps = (data.steps || []).slice(0, n);
    if (n !== undefined && steps.length < n) usage(`--steps ${n}: ${values.data || 'no --data'} has ${steps.length}`);
    const sessionOptions = values['session-options'] ? JSON.parse(values['session-options']) : undefined;
    entries = positionals.map((dir) => ({
      dir, steps, eval: steps.length ? data.eval : undefined, parameters: values.parameters, sessionOptions,
    }));
  }
  if (entries.some((e) => e.sync) && !values['lookahead-module']) usage('"sync" sets need --lookahead-module');
  for (const e of entries) {
    const unknown = (e.versions || []).filter((v) => !VERSIONS[v]);
    if (unknown.length) usage(`${e.dir}: unknown version ${unknown.join(', ')}`);
  }
  const dirs = entries.map((e) => path.resolve(e.dir));
  const files = await Promise.all(dirs.map(artifactFiles));
  const requests = entries.map((e, i) => ({
    name: e.name ?? e.dir,
    files: Object.fromEntries(Object.entries(files[i]).map(([k, f]) => [k, `/sets/${i}/${encodeURIComponent(f)}`])),
    steps: e.steps,
    eval: e.eval,
    parameters: e.parameters,
    sessionOptions: e.sessionOptions,
    lookaheadModule: e.sync ? LOOKAHEAD_MODULE_URL : undefined,
    versions: e.versions,
  }));

  const server = await startServer(dirs, { lookaheadModule: values['lookahead-module'] });
  const browser = await chromium.launch({ executablePath: values.chromium, headless: true, args: CHROMIUM_ARGS });
  const browserVersion = browser.version();
  const timeoutMs = Number(values.timeout) * 1000;
  const jobs = Number(values.jobs ?? '1');
  if (!(Number.isInteger(jobs) && jobs >= 1)) usage('--jobs: a whole number >= 1');
  // One page per version at a time; --jobs versions side by side (their lines then interleave).
  async function runVersion(version) {
    const mine = [...requests.entries()].filter(([, r]) => !r.versions || r.versions.includes(version));
    if (!mine.length) return;
    const context = await browser.newContext();
    let page = null;
    let ort = null;
    let threads = null;
    let consoleLines = [];
    const openPage = async () => {
      if (page) await page.close().catch(() => {});
      page = await context.newPage();
      page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
      page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
      await page.goto(`${server.url}/?ort=${version}&threads=${values.threads}`);
      ({ ortVersion: ort, threads } = await page.evaluate(() => window.harness.ready));
    };
    await openPage();
    for (const [n, [i, request]] of mine.entries()) {
      consoleLines = [];
      const started = Date.now();
      let result;
      let timer;
      try {
        result = await Promise.race([
          page.evaluate((r) => window.harness.runSet(r), request),
          new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${values.timeout} s`)), timeoutMs); }),
        ]);
      } catch (e) {
        // A timeout or a crashed page: whether it loads is unknown.
        result = { set: request.name, loads: null, error: `harness: ${e.message}`, errorCode: null };
      } finally {
        clearTimeout(timer);
      }
      const line = { version, ort, threads, ...result, dir: dirs[i], ms: Date.now() - started, browser: browserVersion };
      if (consoleLines.length) line.console = consoleLines.slice(-20);
      process.stdout.write(JSON.stringify(line, finite) + '\n');
      // After a C++ exception or a WASM trap (result.unsound), a timeout or a crash, the runtime's
      // state is not to be trusted: the next set gets a fresh page. An error ORT returned as a
      // status leaves it sound.
      const unsound = result.loads === null || result.unsound;
      if (unsound && n + 1 < mine.length) await openPage();
    }
    await context.close();
  }

  try {
    const queue = [...versions];
    const worker = async () => {
      while (queue.length) await runVersion(queue.shift());
    };
    await Promise.all(Array.from({ length: Math.min(jobs, versions.length) }, worker));
  } finally {
    await browser.close();
    await server.close();
  }
}

main().catch((e) => {
  console.error(`load.mjs: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
