// The in-page half of the harness (tests/web/README.md). Loaded by index.html?ort=<version>[&threads=N]
// (threads: 1.19 only):
// loads onnxruntime-web's training build of that version (its UMD bundle, global `ort`) and
// exposes window.harness:
//
//   harness.ready            -> Promise<{ortVersion, threads, crossOriginIsolated}>
//   harness.runSet(request)  -> Promise<result>   (never rejects; errors are in the result)
//
// request: {
//   name,                                     // echoed back as result.set
//   files: {checkpointState, trainModel, evalModel?, optimizerModel?},   // URLs (fetched here)
//   sessionOptions?,                          // InferenceSession.SessionOptions for create()
//   steps?: [[feeds, ...], ...],              // per optimizer step, one runTrainStep per feeds,
//                                             // then runOptimizerStep() and lazyResetGrad()
//   eval?: feeds,                             // runEvalStep(eval) after every step
//   parameters?: 'trainable' | 'all',         // getContiguousParameters(trainableOnly) after load
//                                             // and after every step
//   lookaheadModule?: URL,                    // onnx-lookahead-web.mjs: after load and after every
//                                             // step (after its eval and parameters), call its
//                                             // syncParameters twice, reading the parameters
//                                             // (getContiguousParameters(false)) after each call
// }
// feeds: {inputName: {type: 'float32' | 'int64' | ..., dims: [...], data: [...]}}
//
// result: {set, loads, error, errorCode, trainingInputNames, trainingOutputNames, evalInputNames,
//   evalOutputNames, losses: [[loss per feeds] per step], evals: [..], parameters: [[..] after
//   load, after step 1, ...], parametersError, syncs: [{returned: [first, second], parameters:
//   [after first, after second]} after load, after step 1, ...], syncError, runError, runErrorCode,
//   runErrorAt, releaseError, unsound}
//
// ONNX Runtime's WASM build cannot catch C++ exceptions: an ORT_THROW inside the runtime reaches
// JavaScript as a bare number, the address of the exception object. The harness then reads the
// exception's message (std::exception::what(), a std::string in the object) from the WASM memory,
// best effort: `error` is that message, or "C++ exception <n> (message not found in memory)";
// `errorCode` is the number. Errors ORT reports through its C API status arrive as JS Errors and
// are taken as they are. After a C++ exception or a WASM trap ("memory access out of bounds")
// the runtime's state is not to be trusted (`unsound: true`): the driver loads the page afresh
// before the next set.
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const version = params.get('ort') || '1.19';
  // 1.17 and 1.18 ship only a single-threaded training WASM (ort-training-wasm-simd.wasm): with
  // numThreads > 1 they look for a threaded one and no backend initializes. Only 1.19 has threads.
  const threads = version === '1.19' ? Number(params.get('threads') || '1') : 1;
  const status = (text) => {
    const el = document.getElementById('status');
    if (el) el.textContent = text;
  };

  // ---------------------------------------------------------------- WASM memories, for messages
  const memories = new Set();
  function collectMemories(value, depth) {
    if (!value || depth > 2) return;
    if (value instanceof WebAssembly.Memory) {
      memories.add(value);
      return;
    }
    if (typeof value === 'object') for (const v of Object.values(value)) collectMemories(v, depth + 1);
  }
  const noteInstance = (result, imports) => {
    const instance = result instanceof WebAssembly.Instance ? result : result && result.instance;
    if (instance) collectMemories(instance.exports, 1);
    collectMemories(imports, 0);
    return result;
  };
  const instantiate = WebAssembly.instantiate;
  WebAssembly.instantiate = function (source, imports, ...rest) {
    return instantiate.call(this, source, imports, ...rest).then((r) => noteInstance(r, imports));
  };
  if (WebAssembly.instantiateStreaming) {
    const streaming = WebAssembly.instantiateStreaming;
    WebAssembly.instantiateStreaming = function (source, imports, ...rest) {
      return streaming.call(this, source, imports, ...rest).then((r) => noteInstance(r, imports));
    };
  }

  // A C string at `address` in `bytes`: printable (UTF-8 allowed), NUL-terminated, 8..8192 bytes.
  function cString(bytes, address) {
    if (!(address > 0 && address < bytes.length)) return null;
    let end = address;
    const limit = Math.min(bytes.length, address + 8192);
    while (end < limit && bytes[end] !== 0) {
      const b = bytes[end];
      if (b < 0x20 && b !== 0x09 && b !== 0x0a && b !== 0x0d) return null;
      if (b === 0x7f) return null;
      end++;
    }
    if (end === limit || end - address < 8) return null;
    return new TextDecoder('utf-8', { fatal: false }).decode(bytes.slice(address, end));
  }

  // The message of the C++ exception object at `ptr`: the longest C string that a 32-bit word in
  // the object's first 256 bytes points to (onnxruntime::OnnxRuntimeException keeps what() in a
  // std::string member, whose heap buffer such a word addresses).
  function cppMessage(ptr) {
    let best = null;
    for (const memory of memories) {
      const bytes = new Uint8Array(memory.buffer);
      if (!(ptr > 0 && ptr + 4 <= bytes.length)) continue;
      const view = new DataView(memory.buffer);
      for (let off = 0; off < 256 && ptr + off + 4 <= bytes.length; off += 4) {
        const s = cString(bytes, view.getUint32(ptr + off, true));
        if (s && (!best || s.length > best.length)) best = s;
      }
    }
    return best;
  }

  // -> {error, errorCode, unsound}: unsound when the runtime's state can no longer be trusted (a
  // C++ exception went through it without unwinding, or the WASM code trapped).
  function describe(e) {
    const code = typeof e === 'number' || typeof e === 'bigint' ? Number(e)
      : e && typeof e === 'object' && typeof e.excPtr === 'number' ? e.excPtr : null;
    if (code !== null) {
      const message = cppMessage(code);
      return { error: message ?? `C++ exception ${code} (message not found in memory)`, errorCode: code, unsound: true };
    }
    const unsound = e instanceof WebAssembly.RuntimeError;
    if (e instanceof Error) return { error: e.message || String(e), errorCode: null, unsound };
    return { error: String(e), errorCode: null, unsound };
  }

  // ---------------------------------------------------------------------------- onnxruntime-web
  const ready = new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `/ort/${version}/ort.training.wasm.min.js`;
    script.onload = () => {
      try {
        const ort = window.ort;
        if (!ort || !ort.TrainingSession) throw new Error(`no ort.TrainingSession in ${script.src}`);
        ort.env.wasm.wasmPaths = `/ort/${version}/`;
        ort.env.wasm.numThreads = threads;
        ort.env.wasm.proxy = false;
        ort.env.logLevel = 'error';
        status(`onnxruntime-web ${ort.env.versions?.web ?? '?'} ready`);
        resolve({ ortVersion: ort.env.versions?.web ?? null, threads, crossOriginIsolated: self.crossOriginIsolated });
      } catch (e) {
        reject(e);
      }
    };
    script.onerror = () => reject(new Error(`cannot load ${script.src}`));
    document.head.appendChild(script);
  });

  async function fetchBytes(url) {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  }

  function tensor(spec) {
    const arrays = {
      float32: Float32Array, float64: Float64Array, int32: Int32Array, uint8: Uint8Array, int8: Int8Array,
      int64: BigInt64Array, bool: Uint8Array,
    };
    const Array_ = arrays[spec.type];
    if (!Array_) throw new Error(`unsupported tensor type ${spec.type}`);
    const data = spec.type === 'int64' ? BigInt64Array.from(spec.data, (v) => BigInt(v)) : Array_.from(spec.data);
    return new window.ort.Tensor(spec.type, data, spec.dims);
  }

  const feedsOf = (feeds) => Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, tensor(v)]));
  const scalar = (value) => Number(value.data[0]);

  async function runSet(request) {
    const result = { set: request.name, loads: false, error: null, errorCode: null };
    const ort = window.ort;
    let session = null;
    let lookahead = null;
    let record = null;
    try {
      const options = {};
      for (const [key, url] of Object.entries(request.files)) if (url) options[key] = await fetchBytes(url);
      if (request.lookaheadModule) {
        // Read before create(), which may take the buffers over. A failure here is the module's,
        // not the set's: it does not make the set fail to load.
        try {
          lookahead = await import(request.lookaheadModule);
          record = lookahead.readRecord(options.trainModel);
        } catch (e) {
          result.syncError = `before load: ${describe(e).error}`;
          lookahead = null;
        }
      }
      session = await ort.TrainingSession.create(options, request.sessionOptions || {});
      result.loads = true;
    } catch (e) {
      const { error, errorCode, unsound } = describe(e);
      Object.assign(result, { error, errorCode });
      if (unsound) result.unsound = true;
      // The WASM backend did not start: that says nothing about the set.
      if (/no available backend found/.test(error)) Object.assign(result, { loads: null, unsound: true });
      return result;
    }
    result.trainingInputNames = [...session.trainingInputNames];
    result.trainingOutputNames = [...session.trainingOutputNames];
    result.evalInputNames = [...session.evalInputNames];
    result.evalOutputNames = [...session.evalOutputNames];
    let at = 'after load';
    try {
      const wantParameters = request.parameters === 'trainable' || request.parameters === 'all';
      const trainableOnly = request.parameters === 'trainable';
      const readParameters = async () => {
        if (!wantParameters || result.parametersError) return;
        try {
          result.parameters.push(Array.from((await session.getContiguousParameters(trainableOnly)).data));
        } catch (e) {
          // web 1.18.0 crashes here with trainableOnly=false on sets with frozen parameters.
          const { error, unsound } = describe(e);
          result.parametersError = `${at}: ${error}`;
          if (unsound) result.unsound = true;
        }
      };
      // The module's syncParameters, twice, each followed by a read of every parameter.
      const sync = async () => {
        if (!lookahead || result.syncError) return;
        const entry = { returned: [], parameters: [] };
        try {
          for (let i = 0; i < 2; i++) {
            entry.returned.push(await lookahead.syncParameters(session, record));
            entry.parameters.push(Array.from((await session.getContiguousParameters(false)).data));
          }
          result.syncs.push(entry);
        } catch (e) {
          const { error, unsound } = describe(e);
          result.syncError = `${at}: ${error}`;
          if (unsound) result.unsound = true;
        }
      };
      if (wantParameters) result.parameters = [];
      if (request.lookaheadModule) result.syncs = [];
      await readParameters();
      await sync();
      const steps = request.steps || [];
      if (steps.length) {
        result.losses = [];
        if (request.eval) result.evals = [];
      }
      for (let t = 0; t < steps.length; t++) {
        at = `step ${t + 1}`;
        const losses = [];
        for (const feeds of steps[t]) {
          const out = await session.runTrainStep(feedsOf(feeds));
          losses.push(scalar(out[session.trainingOutputNames[0]]));
        }
        await session.runOptimizerStep();
        await session.lazyResetGrad();
        result.losses.push(losses);
        if (request.eval) {
          const out = await session.runEvalStep(feedsOf(request.eval));
          result.evals.push(scalar(out[session.evalOutputNames[0]]));
        }
        await readParameters();
        await sync();
      }
    } catch (e) {
      const { error, errorCode, unsound } = describe(e);
      Object.assign(result, { runError: error, runErrorCode: errorCode, runErrorAt: at });
      if (unsound) result.unsound = true;
    }
    try {
      await session.release();
    } catch (e) {
      const { error, unsound } = describe(e);
      result.releaseError = error;
      if (unsound) result.unsound = true;
    }
    return result;
  }

  window.harness = { ready, runSet, describe };
})();
