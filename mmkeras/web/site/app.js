// The page: loads the bundle with LiteRT.js and tokenizers.js, classifies a text and an image.
// A multilabel bundle (bundle.json `output_activation` "sigmoid") gives a sigmoid per label and the
// set of labels at or above their `thresholds`; a bundle without the key is single-label softmax.
//
// Scriptable: index.html?text=...&image=URL (either may be absent) runs that example at once, and
// index.html?examples=URL runs a JSON list of {"text", "image"} (or test_vectors.json); the result
// goes as JSON into the element with id "result" ({"error": ...} if something failed).
import {Tensor, loadAndCompile, loadLiteRt} from '@litertjs/core';
import {Tokenizer} from '@huggingface/tokenizers';
import {decodeImage, encodeText, imageTensor} from './preprocessing.js';

const BUNDLE = './bundle/';
const TYPED_ARRAYS = {int32: Int32Array, float32: Float32Array};

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

async function loadBundle() {
  const bundle = await (await fetchOk(BUNDLE + 'bundle.json')).json();
  const tokenizerJson = await (await fetchOk(BUNDLE + bundle.tokenizer_file)).json();
  await loadLiteRt('./wasm/');
  const modelBytes = new Uint8Array(await (await fetchOk(BUNDLE + bundle.model_file)).arrayBuffer());
  const model = await loadAndCompile(modelBytes, {accelerator: 'wasm'});
  const tokenizer = new Tokenizer(tokenizerJson, {});
  const padId = tokenizerJson.padding?.pad_id ?? 0;
  return {bundle, model, tokenizer, padId};
}

function isPresent(value) {
  return value !== null && value !== undefined && !(typeof value === 'string' && value.trim() === '');
}

/** The four model inputs of one example, as bundle.json names and shapes them. */
async function preprocess(state, text, imageBlob) {
  const {preprocessing} = state.bundle;
  const [height, width] = preprocessing.image_size;
  const textPresent = isPresent(text);
  const {tokenIds, paddingMask} = encodeText(
    state.tokenizer, textPresent ? text : '', preprocessing.sequence_length, state.padId);
  let pixels = new Float32Array(height * width * 3);
  if (imageBlob) {
    const {rgba, width: imageWidth, height: imageHeight, draft} = await decodeImage(imageBlob, preprocessing);
    pixels = imageTensor(rgba, imageWidth, imageHeight, preprocessing.image_size, preprocessing.image, draft);
  }
  const modalityMask = new Float32Array([textPresent ? 1 : 0, imageBlob ? 1 : 0]);
  return {token_ids: tokenIds, padding_mask: paddingMask, image: pixels, modality_mask: modalityMask};
}

/** Logits of one example: every tensor bound by its name (the model's order is not bundle.json's). */
async function runModel(state, values) {
  const inputs = {};
  for (const entry of state.bundle.inputs) {
    const data = TYPED_ARRAYS[entry.dtype].from(values[entry.name]);
    inputs[entry.name] = new Tensor(data, entry.shape);
  }
  const outputs = await state.model.run(inputs);
  const logits = Array.from(outputs[state.bundle.output.name].toTypedArray());
  Object.values(inputs).forEach((tensor) => tensor.delete());
  Object.values(outputs).forEach((tensor) => tensor.delete());
  return logits;
}

function softmax(logits) {
  const largest = Math.max(...logits);
  const exponentials = logits.map((logit) => Math.exp(logit - largest));
  const total = exponentials.reduce((sum, value) => sum + value, 0);
  return exponentials.map((value) => value / total);
}

function sigmoid(logits) {
  return logits.map((logit) => 1 / (1 + Math.exp(-logit)));
}

/** The result's label fields: the best label and every label's score; for multilabel also the label set. */
function labelsOf(bundle, logits) {
  const multilabel = bundle.output_activation === 'sigmoid';
  const scores = multilabel ? sigmoid(logits) : softmax(logits);
  const best = logits.indexOf(Math.max(...logits));
  const result = {
    label: bundle.labels[best],
    scores: Object.fromEntries(bundle.labels.map((label, index) => [label, scores[index]])),
  };
  if (multilabel) result.labels = bundle.labels.filter((_, index) => scores[index] >= bundle.thresholds[index]);
  return result;
}

async function classify(state, text, imageBlob) {
  const started = performance.now();
  const values = await preprocess(state, text, imageBlob);
  const preprocessed = performance.now();
  const logits = await runModel(state, values);
  const finished = performance.now();
  return {
    ...labelsOf(state.bundle, logits),
    logits,
    token_ids: Array.from(values.token_ids),
    pixel_sum: values.image.reduce((sum, value) => sum + value, 0),
    latency_ms: {preprocess: preprocessed - started, inference: finished - preprocessed},
  };
}

async function imageFromUrl(url) {
  return isPresent(url) ? await (await fetchOk(url)).blob() : null;
}

function show(prediction) {
  document.getElementById('label').textContent =
    prediction.labels ? (prediction.labels.join(' | ') || '(no label)') : prediction.label;
  const {preprocess: preprocessMs, inference} = prediction.latency_ms;
  document.getElementById('latency').textContent =
    `preprocessing ${preprocessMs.toFixed(1)} ms, inference ${inference.toFixed(1)} ms`;
  const table = document.getElementById('scores');
  table.replaceChildren(...Object.entries(prediction.scores)
    .sort((a, b) => b[1] - a[1])
    .map(([label, score]) => {
      const row = document.createElement('tr');
      row.append(...[label, score.toFixed(4)].map((text) => Object.assign(document.createElement('td'), {textContent: text})));
      return row;
    }));
}

function writeResult(value) {
  document.getElementById('result').textContent = JSON.stringify(value);
}

/** Runs the example(s) named in the page's address, if any. */
async function runFromAddress(state) {
  const parameters = new URLSearchParams(location.search);
  if (parameters.has('examples')) {
    const listed = await (await fetchOk(parameters.get('examples'))).json();
    const examples = Array.isArray(listed) ? listed : listed.vectors;
    const base = new URL(parameters.get('examples'), location.href);
    const results = [];
    for (const example of examples) {
      const image = isPresent(example.image) ? await imageFromUrl(new URL(example.image, base)) : null;
      results.push(await classify(state, example.text, image));
    }
    writeResult(results);
  } else if (parameters.has('text') || parameters.has('image')) {
    const prediction = await classify(state, parameters.get('text'), await imageFromUrl(parameters.get('image')));
    show(prediction);
    writeResult(prediction);
  }
}

async function main() {
  const status = document.getElementById('status');
  const state = await loadBundle();
  status.textContent = `ready: ${state.bundle.labels.length} labels, ${state.bundle.quantization} model`;
  const form = document.getElementById('form');
  form.querySelector('button').disabled = false;
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      show(await classify(state, document.getElementById('text').value, document.getElementById('image').files[0] ?? null));
    } catch (error) {
      status.textContent = `error: ${error.message}`;
    }
  });
  await runFromAddress(state);
}

main().catch((error) => {
  document.getElementById('status').textContent = `error: ${error.message}`;
  writeResult({error: String(error.message ?? error)});
});
