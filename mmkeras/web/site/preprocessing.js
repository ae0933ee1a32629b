// The bundle's preprocessing in the browser, the same as mmkeras/preprocessing/ in Python.
//
// Text: tokenizers.js gives the ids of tokenizer.json's WordPiece and [CLS]/[SEP] template, but ignores
// its truncation and padding, which are done here as Hugging Face `tokenizers` does them.
// Image: no browser API resizes like Pillow (canvas drawImage filters differ), so Pillow's bilinear
// resample (Resample.c: an antialiased bilinear with 22-bit fixed-point coefficients, one pass per
// axis, each rounded to 8 bits) and its alpha compositing onto white (AlphaComposite.c) are
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

/** Per output pixel: first source index, count and fixed-point weights (Pillow's precompute_coeffs). */
export function resampleCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = 1.0 * filterScale; // bilinear support 1, widened when shrinking (antialiasing)
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
      raw[k] = x < 1.0 ? 1.0 - x : 0.0;
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
function resamplePass(rgb, width, height, outSize, horizontal) {
  const inSize = horizontal ? width : height;
  const {bounds, weights, kernelSize} = resampleCoefficients(inSize, outSize);
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
 * Pillow's `Image.resize((outWidth, outHeight), BILINEAR)` of RGB bytes: the horizontal pass, then the
 * vertical one, as Pillow's source does (a pass is skipped when its size stays). The Pillow 13.0.0 wheel
 * measured here sometimes runs them the other way round: up to one unit apart then (docs/design.md).
 */
export function resizeBilinear(rgb, width, height, outWidth, outHeight) {
  let pixels = rgb;
  if (outWidth !== width) pixels = resamplePass(pixels, width, height, outWidth, true);
  if (outHeight !== height) pixels = resamplePass(pixels, outWidth, height, outHeight, false);
  return pixels;
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

/** The model's `image` input (Float32Array [H * W * 3], 0..255) from decoded RGBA bytes. */
export function imageTensor(rgba, width, height, imageSize, background) {
  const [outHeight, outWidth] = imageSize;
  return Float32Array.from(resizeBilinear(compositeOnBackground(rgba, background), width, height, outWidth, outHeight));
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
