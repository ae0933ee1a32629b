// The bundle's preprocessing in the browser, the same as mmkeras/preprocessing/ in Python.
//
// Text: tokenizers.js gives the ids of tokenizer.json's WordPiece and [CLS]/[SEP] template, but ignores
// its truncation and padding, which are done here as Hugging Face `tokenizers` does them.
// Image: no browser API resizes like Pillow (canvas drawImage filters differ), so Pillow's bilinear
// and bicubic resample (Resample.c: antialiased filters with 22-bit fixed-point coefficients, one pass
// per axis, each rounded to 8 bits), its nearest resize (Geometry.c's affine scaling), timm's centre
// crop (load_image's crop_pct) and Pillow's alpha compositing onto white (AlphaComposite.c) are
// reimplemented. A bundle with `jpeg_draft_factor` decodes a large JPEG at the DCT scale load_image picks,
// through WebCodecs' ImageDecoder (Chromium's libjpeg-turbo scales as Pillow's `draft` does), and resizes
// from the same source box (docs/design.md#photo-decoding-at-reduced-dct-scale).

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

/**
 * Per output pixel: first source index, count and fixed-point weights (Pillow's precompute_coeffs), for the
 * source span `in0..in1` (Pillow's resize `box`; the whole axis by default).
 */
export function resampleCoefficients(inSize, outSize, filter = FILTERS.bilinear, in0 = 0, in1 = inSize) {
  // Pillow takes the box as C floats (single precision), subtracted as floats.
  const start = Math.fround(in0);
  const scale = Math.fround(Math.fround(in1) - start) / outSize;
  const filterScale = Math.max(scale, 1.0);
  const support = filter.support * filterScale; // widened when shrinking (antialiasing)
  const inverseScale = 1.0 / filterScale; // Pillow multiplies by it (dividing differs in the last bit)
  const kernelSize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const normalized = new Float64Array(outSize * kernelSize);
  for (let out = 0; out < outSize; out++) {
    const center = start + (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - first;
    const raw = new Float64Array(count);
    let total = 0.0;
    for (let k = 0; k < count; k++) {
      const x = Math.abs((k + first - center + 0.5) * inverseScale);
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

/**
 * One resampling pass over RGB bytes along x (`horizontal`) or y from `in0..in1`, as Pillow's 8-bit passes.
 * The three channels share one walk over the taps (`step` bytes apart along the pass); the sums are integers
 * far below 2^53, exact in doubles, so the order of the loops does not change a value.
 */
function resamplePass(rgb, width, height, outSize, horizontal, filter, in0, in1) {
  const {bounds, weights, kernelSize} = resampleCoefficients(horizontal ? width : height, outSize, filter, in0, in1);
  const outWidth = horizontal ? outSize : width;
  const outHeight = horizontal ? height : outSize;
  const step = horizontal ? 3 : width * 3;
  const half = 2 ** (PRECISION_BITS - 1);
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const position = horizontal ? x : y;
      const count = bounds[position * 2 + 1];
      const firstWeight = position * kernelSize;
      let source = horizontal ? (y * width + bounds[position * 2]) * 3 : (bounds[position * 2] * width + x) * 3;
      let red = half;
      let green = half;
      let blue = half;
      for (let k = 0; k < count; k++, source += step) {
        const weight = weights[firstWeight + k];
        red += rgb[source] * weight;
        green += rgb[source + 1] * weight;
        blue += rgb[source + 2] * weight;
      }
      const target = (y * outWidth + x) * 3;
      out[target] = clip8(red);
      out[target + 1] = clip8(green);
      out[target + 2] = clip8(blue);
    }
  }
  return out;
}

/**
 * Pillow's `Image.resize((outWidth, outHeight), BILINEAR or BICUBIC, box)` of RGB bytes: the horizontal pass,
 * then the vertical one, as Pillow's source does (a pass is skipped when its size and span stay). The Pillow
 * 13.0.0 wheel measured here sometimes runs them the other way round: up to one unit apart then
 * (docs/design.md). `box` is `[left, top, right, bottom]` in source pixels, the whole image by default.
 */
export function resizeFiltered(rgb, width, height, outWidth, outHeight, resample = 'bilinear', box = null) {
  const filter = FILTERS[resample];
  const [left, top, right, bottom] = box ?? [0, 0, width, height];
  let pixels = rgb;
  if (outWidth !== width || left !== 0 || right !== outWidth) {
    pixels = resamplePass(pixels, width, height, outWidth, true, filter, left, right);
  }
  if (outHeight !== height || top !== 0 || bottom !== outHeight) {
    pixels = resamplePass(pixels, outWidth, height, outHeight, false, filter, top, bottom);
  }
  return pixels;
}

/**
 * Source index per output index of Pillow's NEAREST resize of the span `in0..in1` (Geometry.c's affine
 * transform: a running sum of the step from the first pixel centre).
 */
function nearestIndices(inSize, outSize, in0 = 0, in1 = inSize) {
  const step = Math.fround(Math.fround(in1) - Math.fround(in0)) / outSize; // the box as C floats, as above
  const indices = new Int32Array(outSize);
  let coordinate = Math.fround(in0) + step * 0.5;
  for (let out = 0; out < outSize; out++) {
    indices[out] = Math.min(Math.trunc(coordinate), inSize - 1);
    coordinate += step;
  }
  return indices;
}

/** Pillow's `Image.resize((outWidth, outHeight), NEAREST, box)` of RGB bytes. */
export function resizeNearest(rgb, width, height, outWidth, outHeight, box = null) {
  const [left, top, right, bottom] = box ?? [0, 0, width, height];
  const columns = nearestIndices(width, outWidth, left, right);
  const rows = nearestIndices(height, outHeight, top, bottom);
  const out = new Uint8Array(outWidth * outHeight * 3);
  for (let y = 0; y < outHeight; y++) {
    for (let x = 0; x < outWidth; x++) {
      const source = (rows[y] * width + columns[x]) * 3;
      out.set(rgb.subarray(source, source + 3), (y * outWidth + x) * 3);
    }
  }
  return out;
}

/** Python's round() (numpy's too): halves go to the even neighbour. */
export function roundHalfEven(value) {
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

/** `[width, height]` load_image resizes an image of `width` x `height` to (before a centre crop). */
export function resizeSize(width, height, imageSize, cropPct = null) {
  if (cropPct === null || cropPct === undefined) return [imageSize[1], imageSize[0]];
  const {scaledWidth, scaledHeight} = centreCropGeometry(width, height, imageSize, cropPct);
  return [scaledWidth, scaledHeight];
}

/**
 * RGB bytes resized to `imageSize` ([H, W]) as `load_image` does: whole, or centre-cropped with `cropPct`.
 * A reduced JPEG decode (`decodeImage`) passes `draft`: `{fullWidth, fullHeight, box}`, the photo's size (which
 * sets the crop geometry) and the region of the decoded pixels the photo covers.
 */
export function resizeImage(rgb, width, height, imageSize, resample = 'bilinear', cropPct = null, draft = null) {
  const box = draft?.box ?? null;
  const resizeTo = (outWidth, outHeight) => (resample === 'nearest'
    ? resizeNearest(rgb, width, height, outWidth, outHeight, box)
    : resizeFiltered(rgb, width, height, outWidth, outHeight, resample, box));
  const [outHeight, outWidth] = imageSize;
  if (cropPct === null || cropPct === undefined) return resizeTo(outWidth, outHeight);
  const {scaledWidth, scaledHeight, left, top} = centreCropGeometry(
    draft?.fullWidth ?? width, draft?.fullHeight ?? height, imageSize, cropPct);
  return cropRgb(resizeTo(scaledWidth, scaledHeight), scaledWidth, left, top, outWidth, outHeight);
}

/** RGBA bytes composited onto an opaque background colour, as Pillow's alpha_composite, to RGB bytes. */
export function compositeOnBackground(rgba, background) {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let pixel = 0; pixel < rgba.length / 4; pixel++) {
    const alpha = rgba[pixel * 4 + 3];
    if (alpha === 255) { // the formula below gives the pixel itself (checked for every value): skip it
      rgb[pixel * 3] = rgba[pixel * 4];
      rgb[pixel * 3 + 1] = rgba[pixel * 4 + 1];
      rgb[pixel * 3 + 2] = rgba[pixel * 4 + 2];
      continue;
    }
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
 * `preprocessing.image` settings (`resample`, `crop_pct`; null or absent: no crop) and, for a reduced JPEG
 * decode, `decodeImage`'s `draft`.
 */
export function imageTensor(rgba, width, height, imageSize, imageSettings, draft = null) {
  const {alpha_background: background, resample = 'bilinear', crop_pct: cropPct = null} = imageSettings;
  const rgb = compositeOnBackground(rgba, background);
  return Float32Array.from(resizeImage(rgb, width, height, imageSize, resample, cropPct, draft));
}

/** RGBA bytes of a drawable (ImageBitmap, VideoFrame) as displayed, read back through an OffscreenCanvas. */
function drawnRgba(drawable, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext('2d', {willReadFrequently: true});
  context.drawImage(drawable, 0, 0);
  return context.getImageData(0, 0, width, height).data;
}

/** The displayed `[width, height]` of an image file, from its header (the page's image element, EXIF applied). */
function displayedSize(blob) {
  const url = URL.createObjectURL(blob);
  return new Promise((resolve, reject) => {
    const element = new Image();
    element.onload = () => resolve([element.naturalWidth, element.naturalHeight]);
    element.onerror = () => reject(new Error('cannot read the image'));
    element.src = url;
  }).finally(() => URL.revokeObjectURL(url));
}

/**
 * The DCT scale denominator load_image's `_draft_jpeg` picks (Pillow's `draft`): the largest of 8, 4, 2, 1 at
 * most `min(W // (factor * w), H // (factor * h))`; the same in either orientation.
 */
export function draftScale(width, height, resizeWidth, resizeHeight, factor) {
  const most = Math.min(Math.floor(width / (factor * resizeWidth)), Math.floor(height / (factor * resizeHeight)));
  return [8, 4, 2, 1].find((scale) => scale <= most) ?? 1;
}

/**
 * The region of a displayed 1/`scale` decode of a `width` x `height` (displayed) photo that the photo covers:
 * load_image's `draft_source_box`. The decode's padded last column and row lie where the file's right and
 * bottom edges are displayed, which the frame's rotation (clockwise) and then horizontal flip tell.
 */
export function draftSourceBox(width, height, scale, rotation, flip) {
  const covered = [width / scale, height / scale];
  const decoded = [Math.ceil(width / scale), Math.ceil(height / scale)];
  // Where the file's top-left corner lands: [on the right, at the bottom].
  let [right, bottom] = {0: [0, 0], 90: [1, 0], 180: [1, 1], 270: [0, 1]}[rotation];
  if (flip) right = 1 - right;
  const left = (decoded[0] - covered[0]) * right;
  const top = (decoded[1] - covered[1]) * bottom;
  return [left, top, left + covered[0], top + covered[1]];
}

/**
 * A JPEG decoded at the DCT scale load_image would use, or null when there is none (a small photo) or the
 * browser cannot (no WebCodecs ImageDecoder, or it ignored the desired size).
 */
async function decodeJpegDraft(blob, imageSize, imageSettings) {
  if (typeof ImageDecoder === 'undefined' || typeof Image === 'undefined') return null;
  const [width, height] = await displayedSize(blob);
  const [resizeWidth, resizeHeight] = resizeSize(width, height, imageSize, imageSettings.crop_pct ?? null);
  const scale = draftScale(width, height, resizeWidth, resizeHeight, imageSettings.jpeg_draft_factor);
  if (scale === 1) return null;
  const decodedWidth = Math.ceil(width / scale);
  const decodedHeight = Math.ceil(height / scale);
  // Chromium scales a JPEG by n/8 to the largest size within the desired area (orientation does not matter).
  const decoder = new ImageDecoder({
    data: await blob.arrayBuffer(), type: 'image/jpeg', colorSpaceConversion: 'none',
    desiredWidth: decodedWidth, desiredHeight: decodedHeight,
  });
  try {
    const {image: frame} = await decoder.decode();
    try {
      if (frame.displayWidth !== decodedWidth || frame.displayHeight !== decodedHeight) return null;
      const box = draftSourceBox(width, height, scale, frame.rotation ?? 0, frame.flip ?? false);
      const rgba = drawnRgba(frame, decodedWidth, decodedHeight);
      return {rgba, width: decodedWidth, height: decodedHeight, draft: {fullWidth: width, fullHeight: height, box}};
    } finally {
      frame.close();
    }
  } finally {
    decoder.close();
  }
}

function isJpeg(bytes) {
  return bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

/**
 * Decoded RGBA bytes of an image file: first frame, EXIF orientation applied, no colour management. With
 * bundle.json's `preprocessing` (`image_size`, `image.jpeg_draft_factor`) a large JPEG is decoded at reduced
 * DCT scale, and `draft` says which region to resize (pass it on to `imageTensor`).
 */
export async function decodeImage(blob, preprocessing = null) {
  const factor = preprocessing?.image?.jpeg_draft_factor ?? null;
  if (factor !== null && isJpeg(new Uint8Array(await blob.slice(0, 3).arrayBuffer()))) {
    const drafted = await decodeJpegDraft(blob, preprocessing.image_size, preprocessing.image);
    if (drafted !== null) return drafted;
  }
  const bitmap = await createImageBitmap(blob, {
    imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none',
  });
  const rgba = drawnRgba(bitmap, bitmap.width, bitmap.height);
  return {rgba, width: bitmap.width, height: bitmap.height, draft: null};
}
