// The bundle's preprocessing in the browser, the same as mmkeras/preprocessing/ in Python.
//
// Text: tokenizers.js gives the ids of tokenizer.json's WordPiece and [CLS]/[SEP] template, but ignores
// its truncation and padding, which are done here as Hugging Face `tokenizers` does them.
// Image: no browser API resizes like Pillow (canvas drawImage filters differ), so Pillow's bilinear
// and bicubic resample (Resample.c: antialiased filters with 22-bit fixed-point coefficients, one pass
// per axis, each rounded to 8 bits), its nearest resize (Geometry.c's affine scaling), timm's centre
// crop (load_image's crop_pct) and Pillow's alpha compositing onto white (AlphaComposite.c) are
// reimplemented.

const PRECISION_BITS = 22; // Pillow: 32 - 8 - 2
const ALPHA_PRECISION_BITS = 7; // Pillow's AlphaComposite.c

/** token_ids and padding_mask (Int32Array [L]) of a text, "" for a missing one. */
export function encodeText(tokenizer, text, sequenceLength, padId) {
  const ids = tokenizer.encode(text).ids;
  // Truncation keeps [CLS] and the final [SEP], dropping pieces from the end.
  const framed = ids.length > sequenceLength
    ? [...ids.slice(0, sequenceLength - 1), ids[ids.length - 1]]
    : ids;
  const tokenIds = new Int32Array(sequenceLength).fill(padId);
  const paddingMask = new Int32Array(sequenceLength);
  framed.forEach((id, position) => {
    tokenIds[position] = id;
    paddingMask[position] = 1;
  });
  return {tokenIds, paddingMask};
}

/** Pillow's filters (Resample.c): the kernel and its support in source pixels. */
const FILTERS = {
  bilinear: {support: 1.0, kernel: (x) => (x < 1.0 ? 1.0 - x : 0.0)},
  bicubic: {
    support: 2.0,
    // Keys' cubic convolution with a = -0.5, as Pillow's bicubic_filter.
    kernel: (x) => (x < 1.0 ? (1.5 * x - 2.5) * x * x + 1 : x < 2.0 ? (((x - 5) * x + 8) * x - 4) * -0.5 : 0.0),
  },
};

/** Per output pixel: first source index, count and fixed-point weights (Pillow's precompute_coeffs). */
export function resampleCoefficients(inSize, outSize, filter = FILTERS.bilinear) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = filter.support * filterScale; // widened when shrinking (antialiasing)
  const kernelSize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const normalized = new Float64Array(outSize * kernelSize);
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - first;
    const raw = new Float64Array(count);
    let total = 0.0;
    for (let k = 0; k < count; k++) {
      const x = Math.abs((k + first - center + 0.5) / filterScale);
      raw[k] = filter.kernel(x);
      total += raw[k];
    }
    for (let k = 0; k < count; k++) raw[k] = total !== 0.0 ? raw[k] / total : raw[k];
    normalized.set(raw, out * kernelSize);
    bounds[out * 2] = first;
    bounds[out * 2 + 1] = count;
  }
  // C's (int) truncates toward zero after adding +-0.5: round half away from zero.
  const weights = Int32Array.from(normalized, (weight) => Math.trunc(
    weight < 0 ? -0.5 + weight * 2 ** PRECISION_BITS : 0.5 + weight * 2 ** PRECISION_BITS));
  return {bounds, weights, kernelSize};
}

function clip8(accumulator) {
  const value = Math.floor(accumulator / 2 ** PRECISION_BITS);
  return value < 0 ? 0 : value > 255 ? 255 : value;
}

/** One resampling pass over RGB bytes along x (`horizontal`) or y, as Pillow's 8-bit passes. */
function resamplePass(rgb, width, height, outSize, horizontal, filter) {
  const inSize = horizontal ? width : height;
  const {bounds, weights, kernelSize} = resampleCoefficients(inSize, outSize, filter);
  const outWidth = horizontal ? outSize : width;
  const outHeight = horizontal ? height : outSize;
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const position = horizontal ? x : y;
      const first = bounds[position * 2];
      const count = bounds[position * 2 + 1];
      for (let channel = 0; channel < 3; channel++) {
        let accumulator = 2 ** (PRECISION_BITS - 1);
        for (let k = 0; k < count; k++) {
          const source = horizontal ? (y * width + first + k) : ((first + k) * width + x);
          accumulator += rgb[source * 3 + channel] * weights[position * kernelSize + k];
        }
        out[(y * outWidth + x) * 3 + channel] = clip8(accumulator);
      }
    }
  }
  return out;
}

/**
 * Pillow's `Image.resize((outWidth, outHeight), BILINEAR or BICUBIC)` of RGB bytes: the horizontal pass,
 * then the vertical one, as Pillow's source does (a pass is skipped when its size stays). The Pillow 13.0.0
 * wheel measured here sometimes runs them the other way round: up to one unit apart then (docs/design.md).
 */
export function resizeFiltered(rgb, width, height, outWidth, outHeight, resample = 'bilinear') {
  const filter = FILTERS[resample];
  let pixels = rgb;
  if (outWidth !== width) pixels = resamplePass(pixels, width, height, outWidth, true, filter);
  if (outHeight !== height) pixels = resamplePass(pixels, outWidth, height, outHeight, false, filter);
  return pixels;
}

/** Source index per output index of Pillow's NEAREST resize (Geometry.c: a running sum from pixel centres). */
function nearestIndices(inSize, outSize) {
  const step = inSize / outSize;
  const indices = new Int32Array(outSize);
  let coordinate = step * 0.5;
  for (let out = 0; out < outSize; out++) {
    indices[out] = Math.min(Math.trunc(coordinate), inSize - 1);
    coordinate += step;
  }
  return indices;
}

/** Pillow's `Image.resize((outWidth, outHeight), NEAREST)` of RGB bytes. */
export function resizeNearest(rgb, width, height, outWidth, outHeight) {
  const columns = nearestIndices(width, outWidth);
  const rows = nearestIndices(height, outHeight);
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const source = (rows[y] * width + columns[x]) * 3;
      out.set(rgb.subarray(source, source + 3), (y * outWidth + x) * 3);
    }
  }
  return out;
}

/** Python's round() of a multiple of 0.5: halves go to the even neighbour. */
function roundHalfEven(value) {
  const floor = Math.floor(value);
  return value - floor === 0.5 ? (floor % 2 === 0 ? floor : floor + 1) : Math.round(value);
}

/** The size to resize to and the box to keep: Python's `centre_crop_geometry` (timm's centre crop). */
export function centreCropGeometry(width, height, imageSize, cropPct) {
  const [outHeight, outWidth] = imageSize;
  const targetHeight = Math.floor(outHeight / cropPct);
  const targetWidth = Math.floor(outWidth / cropPct);
  let scaledWidth;
  let scaledHeight;
  if (width * targetHeight <= height * targetWidth) { // the width is the shorter side
    scaledWidth = targetWidth;
    scaledHeight = Math.max(Math.trunc(targetWidth * height / width), outHeight);
  } else {
    scaledWidth = Math.max(Math.trunc(targetHeight * width / height), outWidth);
    scaledHeight = targetHeight;
  }
  const top = roundHalfEven((scaledHeight - outHeight) / 2);
  const left = roundHalfEven((scaledWidth - outWidth) / 2);
  return {scaledWidth, scaledHeight, left, top};
}

/** Rows `top..top+outHeight`, columns `left..left+outWidth` of RGB bytes. */
function cropRgb(rgb, width, left, top, outWidth, outHeight) {
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    const start = ((top + y) * width + left) * 3;
    out.set(rgb.subarray(start, start + outWidth * 3), y * outWidth * 3);
  }
  return out;
}

/** RGB bytes resized to `imageSize` ([H, W]) as `load_image` does: whole, or centre-cropped with `cropPct`. */
export function resizeImage(rgb, width, height, imageSize, resample = 'bilinear', cropPct = null) {
  const resizeTo = (outWidth, outHeight) => (resample === 'nearest'
    ? resizeNearest(rgb, width, height, outWidth, outHeight)
    : resizeFiltered(rgb, width, height, outWidth, outHeight, resample));
  const [outHeight, outWidth] = imageSize;
  if (cropPct === null || cropPct === undefined) return resizeTo(outWidth, outHeight);
  const {scaledWidth, scaledHeight, left, top} = centreCropGeometry(width, height, imageSize, cropPct);
  return cropRgb(resizeTo(scaledWidth, scaledHeight), scaledWidth, left, top, outWidth, outHeight);
}

/** RGBA bytes composited onto an opaque background colour, as Pillow's alpha_composite, to RGB bytes. */
export function compositeOnBackground(rgba, background) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let pixel = 0; pixel < rgba.length / 4; pixel++) {
    const alpha = rgba[pixel * 4 + 3];
    for (let channel = 0; channel < 3; channel++) {
      let value = background[channel];
      if (alpha !== 0) {
        // With an opaque background Pillow's coefficients reduce to alpha and 255 - alpha (times 2^7).
        const blended = (rgba[pixel * 4 + channel] * alpha + background[channel] * (255 - alpha))
          * (1 << ALPHA_PRECISION_BITS) + (0x80 << ALPHA_PRECISION_BITS);
        value = ((((blended >> 8) + blended) >> 8) >> ALPHA_PRECISION_BITS);
      }
      rgb[pixel * 3 + channel] = value;
    }
  }
  return rgb;
}

/**
 * The model's `image` input (Float32Array [H * W * 3], 0..255) from decoded RGBA bytes, with bundle.json's
 * `preprocessing.image` settings (`resample`, `crop_pct`; null or absent: no crop).
 */
export function imageTensor(rgba, width, height, imageSize, imageSettings) {
  const {alpha_background: background, resample = 'bilinear', crop_pct: cropPct = null} = imageSettings;
  const rgb = compositeOnBackground(rgba, background);
  return Float32Array.from(resizeImage(rgb, width, height, imageSize, resample, cropPct));
}

/** Decoded RGBA bytes of an image file: first frame, EXIF orientation applied, no colour management. */
export async function decodeImage(blob) {
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none',
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(bitmap, 0, 0);
  const {data} = context.getImageData(0, 0, bitmap.width, bitmap.height);
  return {rgba: data, width: bitmap.width, height: bitmap.height};
}
