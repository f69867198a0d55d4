// onnx-lookahead for onnxruntime-web: apply a pending Lookahead sync to a TrainingSession's
// parameters, the counterpart of Python's onnx_lookahead.ort.sync_parameters. No dependencies;
// an ES module for the browser (it does not import onnxruntime-web; it calls the session you pass).
//
//   import { readRecord, syncParameters } from './onnx-lookahead-web.mjs';
//   const trainModel = new Uint8Array(await (await fetch('training_model.onnx')).arrayBuffer());
//   const session = await ort.TrainingSession.create({ checkpointState, trainModel, evalModel, optimizerModel });
//   const record = readRecord(trainModel);        // what the rewrite wrote into the training model
//   ... training steps ...
//   await syncParameters(session, record);        // -> true when it applied a pending sync
//   const weights = await session.getContiguousParameters(true);   // now the Lookahead weights
//
// Why it is needed: the rewritten training graph applies the sync of a cycle's k-th step at the
// next training forward, so right after that step the parameters the session holds (and
// getContiguousParameters returns) are still the fast weights; the eval graph already sees the
// synced ones. syncParameters computes slow + alpha * (fast - slow) exactly as the graph does
// (float32, one rounding per Sub, Mul and Add, in that order; alpha = 1 copies), writes it into
// both the parameter and its slow weight, and sets the step counter to 0 (a cycle starts), as
// Python's sync_parameters does: the graph does not sync again at the next forward, and training
// continues on the same trajectory. Safe at any step: it changes nothing unless the counter says
// a cycle just ended, and a second call returns false.
//
// Where the record comes from: the rewrite records k, alpha, the counter and every wrapped
// parameter's slow weight in each model it writes (metadata "onnx_lookahead.record"), and
// onnxruntime-web exposes neither the checkpoint's properties nor parameter names. The
// training model also gives what the contiguous buffer's layout follows (found by experiment in
// web 1.17.3 and 1.19.2): the parameters in the order of the training model's inputs, each as
// many floats as its input's shape, the trainable ones and the frozen ones (slow weights and
// counter included) interleaved as the inputs are. syncParameters checks that layout against the
// session's own getParametersSize before it writes anything.
//
// Limits: float32 parameters only (onnxruntime-web's parameter API knows no other type); it
// needs getContiguousParameters(false) and loadParametersBuffer(buffer, false), which web
// 1.17.3 and 1.19.2 have and web 1.18.0 breaks on sets with frozen parameters (every rewritten
// set has them): under 1.18.0 (recognised through the global `ort` of its script build) it throws
// instead of corrupting the WASM heap.

const RECORD_KEY = 'onnx_lookahead.record';
const GRADIENT_SUFFIX = '_grad.accumulation.buffer';  // ORT's gradient buffer inputs
const RESET_FLAG = 'lazy_reset_grad';                   // ORT's gradient reset input
const FLOAT = 1;                                       // TensorProto.DataType.FLOAT

// ------------------------------------------------------------------------------ protobuf walk
// Just enough of the protobuf wire format to read ModelProto.metadata_props and the graph's
// inputs (name, element type, static shape); every other field is skipped by its length.

function varint(bytes, pos) {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= bytes.length) throw new Error('truncated protobuf');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
  throw new Error('malformed protobuf varint');
}

/** The fields of the message in bytes[start, end): {field, value} or {field, start, end}. */
function* fields(bytes, start, end) {
  let pos = start;
  while (pos < end) {
    let key;
    [key, pos] = varint(bytes, pos);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (wire === 0) {
      let value;
      [value, pos] = varint(bytes, pos);
      yield { field, value };
    } else if (wire === 2) {
      let length;
      [length, pos] = varint(bytes, pos);
      if (pos + length > end) throw new Error('truncated protobuf');
      yield { field, start: pos, end: pos + length };
      pos += length;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
  if (pos !== end) throw new Error('truncated protobuf');
}

const text = (bytes, f) => new TextDecoder().decode(bytes.subarray(f.start, f.end));

/** ValueInfoProto -> {name, elemType, size}; size null unless every dimension is a number. */
function valueInfo(bytes, start, end) {
  const info = { name: '', elemType: 0, size: null };
  for (const f of fields(bytes, start, end)) {
    if (f.field === 1 && f.start !== undefined) info.name = text(bytes, f);
    if (f.field !== 2 || f.start === undefined) continue;             // TypeProto
    for (const t of fields(bytes, f.start, f.end)) {
      if (t.field !== 1 || t.start === undefined) continue;            // tensor_type
      for (const u of fields(bytes, t.start, t.end)) {
        if (u.field === 1 && u.value !== undefined) info.elemType = u.value;
        if (u.field !== 2 || u.start === undefined) continue;          // shape
        let size = 1;
        for (const d of fields(bytes, u.start, u.end)) {
          if (d.field !== 1 || d.start === undefined) continue;        // dim
          let dim = null;
          for (const v of fields(bytes, d.start, d.end)) if (v.field === 1 && v.value !== undefined) dim = v.value;
          size = dim === null || size === null ? null : size * dim;
        }
        info.size = size;
      }
    }
  }
  return info;
}

// ------------------------------------------------------------------------------------ record

/**
 * What the rewrite recorded in a rewritten training_model.onnx (Uint8Array or ArrayBuffer):
 * {k, alpha, counter, parameters: [{name, slow}], inputs: [{name, elemType, size}]}, the inputs
 * in the model's order. Throws for a model the tool did not rewrite for Lookahead.
 */
export function readRecord(trainingModel) {
  const bytes = trainingModel instanceof Uint8Array ? trainingModel : new Uint8Array(trainingModel);
  let json = null;
  const inputs = [];
  for (const f of fields(bytes, 0, bytes.length)) {
    if (f.field === 14 && f.start !== undefined) {                     // metadata_props
      let key = null;
      let value = null;
      for (const e of fields(bytes, f.start, f.end)) {
        if (e.field === 1 && e.start !== undefined) key = text(bytes, e);
        if (e.field === 2 && e.start !== undefined) value = text(bytes, e);
      }
      if (key === RECORD_KEY) json = value;
    } else if (f.field === 7 && f.start !== undefined) {              // graph
      for (const g of fields(bytes, f.start, f.end)) {
        if (g.field === 11 && g.start !== undefined) inputs.push(valueInfo(bytes, g.start, g.end));
      }
    }
  }
  if (json === null) {
    throw new Error('no onnx-lookahead record in this model: pass the training_model.onnx of a set that onnx-lookahead rewrote');
  }
  const record = JSON.parse(json);
  if (record.scheme !== 'lookahead') throw new Error(`the set was rewritten for ${JSON.stringify(record.scheme)}, not lookahead`);
  if (record.mode !== 'passthrough' && record.mode !== 'reshape') {
    throw new Error(`not an ONNX Runtime training model (rewrite mode ${JSON.stringify(record.mode)})`);
  }
  const { k, alpha } = record.settings || {};
  if (!(Number.isInteger(k) && k >= 1) || !(typeof alpha === 'number' && alpha > 0 && alpha <= 1)) {
    throw new Error(`unreadable Lookahead settings: ${JSON.stringify(record.settings)}`);
  }
  if (!Array.isArray(record.counters) || record.counters.length !== 1) throw new Error('expected one step counter in the record');
  return {
    k,
    alpha,
    counter: record.counters[0],
    parameters: record.parameters.map((p) => ({ name: p.name, slow: p.state[0] })),
    inputs,
  };
}

/**
 * Where each parameter lies in getContiguousParameters(false): name -> {offset, size}, in the
 * order of the training model's inputs, leaving out the user inputs (session.trainingInputNames),
 * the gradient buffers and the reset flag, exactly the inputs ONNX Runtime takes from the
 * checkpoint. Checked against the session's own counts, trainable and all.
 */
async function layout(session, record) {
  const user = new Set(session.trainingInputNames);
  const names = new Set(record.inputs.map((i) => i.name));
  const offsets = new Map();
  let total = 0;
  let trainable = 0;
  for (const input of record.inputs) {
    if (user.has(input.name) || input.name === RESET_FLAG || input.name.endsWith(GRADIENT_SUFFIX)) continue;
    if (input.elemType !== FLOAT || input.size === null) {
      throw new Error(`parameter ${input.name}: onnxruntime-web reads float32 parameters of static shape only`);
    }
    offsets.set(input.name, { offset: total, size: input.size });
    total += input.size;
    if (names.has(input.name + GRADIENT_SUFFIX)) trainable += input.size;
  }
  const [all, trainableOnly] = [await session.getParametersSize(false), await session.getParametersSize(true)];
  if (all !== total || trainableOnly !== trainable) {
    throw new Error(`the session's parameters (${all} values, ${trainableOnly} trainable) do not match the training `
      + `model given (${total}, ${trainable}): pass the record of the set the session was created from`);
  }
  for (const name of [record.counter, ...record.parameters.flatMap((p) => [p.name, p.slow])]) {
    if (!offsets.has(name)) throw new Error(`${name} is not a parameter of the training model`);
  }
  return offsets;
}

// ------------------------------------------------------------------------------------- sync

/**
 * Applies a pending Lookahead sync to the session's parameters in place and marks it applied (the
 * counter goes to 0). `record`: what readRecord returned, or the training model's bytes. Resolves
 * to true when a sync was pending (a cycle just ended), false otherwise (mid-cycle, before the
 * first step, or already applied).
 */
export async function syncParameters(session, record) {
  if (!record || !record.inputs) record = readRecord(record);
  const version = globalThis.ort?.env?.versions?.web;
  if (version === '1.18.0') {
    throw new Error('onnxruntime-web 1.18.0 corrupts its heap in getContiguousParameters(false) on sets with frozen '
      + 'parameters (every rewritten set has them); use 1.17.3 or 1.19.2');
  }
  const offsets = await layout(session, record);
  const values = (await session.getContiguousParameters(false)).data;
  const at = (name) => {
    const { offset, size } = offsets.get(name);
    return values.subarray(offset, offset + size);
  };
  if (at(record.counter)[0] !== record.k) return false;
  // alpha as the graph holds it: a float32 constant.
  const alpha = Math.fround(record.alpha);
  for (const { name, slow } of record.parameters) {
    const p = at(name);
    const s = at(slow);
    for (let i = 0; i < p.length; i++) {
      // Math.fround after each operation: float32 Sub, Mul, Add, as the graph computes them (one
      // operation in double rounded to float32 is the correctly rounded float32 result).
      const synced = record.alpha === 1 ? p[i]
        : Math.fround(s[i] + Math.fround(alpha * Math.fround(p[i] - s[i])));
      p[i] = synced;
      s[i] = synced;
    }
  }
  at(record.counter)[0] = 0;
  await session.loadParametersBuffer(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), false);
  return true;
}
