// The page: loads the bundle with LiteRT.js and tokenizers.js, classifies a text and an image.
// The photo comes from the file picker, a drop on the picture area, or the camera where the browser
// offers capture; the answer shows score bars for the top labels and the preprocessing and inference times.
// A multilabel bundle (bundle.json `output_activation` "sigmoid") gives a sigmoid per label and the
// set of labels at or above their `thresholds`; a bundle without the key is single-label softmax.
//
// Scriptable: index.html?text=...&image=URL (either may be absent) runs that example at once, and
// index.html?examples=URL runs a JSON list of {"text", "image"} (or test_vectors.json); the result
// goes as JSON into the element with id "result" ({"error": ...} if something failed): label, scores,
// logits, token_ids, pixel_sum and latency_ms {preprocess, inference} (a list of them for examples=).
// A photo the browser cannot decode (a damaged file, HEIC outside Safari) is named in the answer panel, and
// the panel and the picture area are cleared: the last photo's answer never stands beside another photo.
import {Tensor, loadAndCompile, loadLiteRt} from '@litertjs/core';
import {Tokenizer} from '@huggingface/tokenizers';
import {decodeImage, encodeText, imageTensor, roundHalfEven} from './preprocessing.js';

const BUNDLE = './bundle/';
const TYPED_ARRAYS = {int32: Int32Array, float32: Float32Array, int8: Int8Array, uint8: Uint8Array};
const INTEGER_RANGES = {int8: [-128, 127], uint8: [0, 255]};
const BARS_SHOWN = 5;
// bundle.json's quantization, as a person says it.
const QUANTIZATION_WORDS = {none: 'float32', float16: 'float16', dynamic: 'int8 weights', int8: 'int8'};

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
  return {bundle, model, tokenizer, padId, modelBytes: modelBytes.length};
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
    const {rgba, width: imageWidth, height: imageHeight, draft} = await decodePhoto(imageBlob, preprocessing);
    pixels = imageTensor(rgba, imageWidth, imageHeight, preprocessing.image_size, preprocessing.image, draft);
  }
  const modalityMask = new Float32Array([textPresent ? 1 : 0, imageBlob ? 1 : 0]);
  return {token_ids: tokenIds, padding_mask: paddingMask, image: pixels, modality_mask: modalityMask};
}

/** A photo that cannot be classified: `message` names it and says why. */
export class PhotoError extends Error {}

/** What the page says of a photo the browser could not decode, named by its file name. */
export function unreadablePhotoMessage(name) {
  return `${name}: cannot read this photo: not an image file, or a format this browser cannot decode ` +
    '(HEIC: save it as JPEG)';
}

/** `decodeImage`, its failure (a browser's own words, or none) turned into one `PhotoError` naming the file. */
async function decodePhoto(imageBlob, preprocessing) {
  try {
    return await decodeImage(imageBlob, preprocessing);
  } catch {
    throw new PhotoError(unreadablePhotoMessage(imageBlob.name || 'the photo'));
  }
}

/**
 * A tensor entry's values in its dtype: a quantized integer tensor (an --integer-only bundle's image, modality
 * mask) gets q = clamp(round(x / scale) + zero_point), as the Python runtime's `quantize` (float32 division, halves
 * to even).
 */
export function quantize(values, entry) {
  const {quantization, dtype} = entry;
  if (!quantization || !INTEGER_RANGES[dtype]) return TYPED_ARRAYS[dtype].from(values);
  const [low, high] = INTEGER_RANGES[dtype];
  return TYPED_ARRAYS[dtype].from(values, (value) => Math.min(high, Math.max(low,
    roundHalfEven(Math.fround(value / quantization.scale)) + quantization.zero_point)));
}

/** An output tensor's values as float numbers: quantized integers become (q - zero_point) * scale. */
export function dequantize(values, entry) {
  const {quantization} = entry;
  if (!quantization || !INTEGER_RANGES[entry.dtype]) return Array.from(values);
  return Array.from(values, (value) => Math.fround((value - quantization.zero_point) * quantization.scale));
}

/** Logits of one example: every tensor bound by its name (the model's order is not bundle.json's). */
async function runModel(state, values) {
  const inputs = {};
  for (const entry of state.bundle.inputs) {
    inputs[entry.name] = new Tensor(quantize(values[entry.name], entry), entry.shape);
  }
  const outputs = await state.model.run(inputs);
  const logits = dequantize(outputs[state.bundle.output.name].toTypedArray(), state.bundle.output);
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

/** The photo at `url` as a File named by the address's last part (`null` for none). */
async function imageFromUrl(url) {
  if (!isPresent(url)) return null;
  const blob = await (await fetchOk(url)).blob();
  const name = decodeURIComponent(new URL(url, location.href).pathname.split('/').pop());
  return new File([blob], name, {type: blob.type});
}

/** "int8, 0.5 MB": the bundle's quantization and model size in words. */
export function describeModel(quantization, sizeBytes) {
  const megabytes = sizeBytes / 2 ** 20;
  const size = megabytes >= 0.1 ? `${megabytes.toFixed(1)} MB` : `${Math.max(1, Math.round(sizeBytes / 1024))} KB`;
  return `${QUANTIZATION_WORDS[quantization] ?? quantization}, ${size}`;
}

function element(tag, className, text) {
  return Object.assign(document.createElement(tag), {className, textContent: text ?? ''});
}

/** The answer panel: the label (or label set), bars for the best scores, the timings. */
function show(state, prediction) {
  const label = document.getElementById('label');
  label.className = '';
  label.textContent = prediction.labels ? (prediction.labels.join(' | ') || '(no label)') : prediction.label;
  const chosen = new Set(prediction.labels ?? [prediction.label]);
  const best = Object.entries(prediction.scores).sort((a, b) => b[1] - a[1]).slice(0, BARS_SHOWN);
  document.getElementById('bars').replaceChildren(...best.map(([name, score]) => {
    const row = element('li', chosen.has(name) ? 'chosen' : '');
    const track = element('span', 'track');
    const fill = element('span', 'fill');
    fill.style.width = `${(100 * score).toFixed(1)}%`;
    track.append(fill);
    row.append(Object.assign(element('span', 'name', name), {title: name}), track,
      element('span', 'value', `${(100 * score).toFixed(1)}%`));
    return row;
  }));
  const {preprocess: preprocessMs, inference} = prediction.latency_ms;
  document.getElementById('timings').textContent =
    `preprocessing ${preprocessMs.toFixed(1)} ms · inference ${inference.toFixed(1)} ms · ` +
    describeModel(state.bundle.quantization, state.modelBytes);
}

function writeResult(value) {
  document.getElementById('result').textContent = JSON.stringify(value);
}

/** A failed classification: the reason where the answer goes (the last answer removed), and in `result`. */
function showError(message) {
  const label = document.getElementById('label');
  label.className = 'failed';
  label.textContent = `error: ${message}`;
  document.getElementById('bars').replaceChildren();
  document.getElementById('timings').textContent = '';
  writeResult({error: message});
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
    document.getElementById('text').value = parameters.get('text') ?? '';
    await classifyShown(state, await imageFromUrl(parameters.get('image')));
  }
}

/** Classifies the text box and `photo` (shown in the picture area), or says why not; a photo that failed is
 * removed from the picture area, so the form is ready for another. */
async function classifyShown(state, photo) {
  setPhoto(photo);
  try {
    const prediction = await classify(state, document.getElementById('text').value, photo);
    show(state, prediction);
    writeResult(prediction);
  } catch (error) {
    if (error instanceof PhotoError) setPhoto(null);
    showError(error.message);
  }
}

let chosenPhoto = null;

/** The photo to classify (a File or Blob, or null), shown in the picture area. */
function setPhoto(blob) {
  chosenPhoto = blob;
  const preview = document.getElementById('preview');
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !blob;
  document.getElementById('drop-hint').hidden = Boolean(blob);
  document.getElementById('clear').hidden = !blob;
  if (blob) preview.src = URL.createObjectURL(blob);
  else preview.removeAttribute('src');
}

/** The file picker, the camera (where the browser offers `capture`) and drag and drop. */
function wirePhotoInputs(onPhoto) {
  const camera = document.getElementById('camera');
  document.getElementById('camera-button').hidden = !('capture' in camera);
  for (const input of [document.getElementById('image'), camera]) {
    input.addEventListener('change', () => {
      if (input.files[0]) onPhoto(input.files[0]);
      input.value = '';
    });
  }
  document.getElementById('clear').addEventListener('click', () => onPhoto(null));
  const drop = document.getElementById('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = [...event.dataTransfer.files].find((candidate) => candidate.type.startsWith('image/'));
    if (file) onPhoto(file);
  });
}

async function main() {
  const state = await loadBundle();
  const {labels, quantization} = state.bundle;
  document.getElementById('model').textContent =
    `${labels.length} labels · ${describeModel(quantization, state.modelBytes)} · runs in this browser, offline`;
  const form = document.getElementById('form');
  wirePhotoInputs((photo) => {
    if (photo) classifyShown(state, photo);
    else setPhoto(null);
  });
  form.querySelector('button[type=submit]').disabled = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    classifyShown(state, chosenPhoto);
  });
  try {
    await runFromAddress(state);
  } catch (error) { // the model is loaded: a missing photo or examples file is the address's fault
    showError(String(error.message ?? error));
  }
}

main().catch((error) => {
  document.getElementById('model').textContent = 'the model could not be loaded';
  document.getElementById('status').textContent = `error: ${error.message}`;
  writeResult({error: String(error.message ?? error)});
});
