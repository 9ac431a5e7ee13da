// focuskit web page: drawing boxes and masks on canvases. Colors come from the server (each detection's "color"
// is its concept's, the one the VLM prompt names); FALLBACK_COLOR is only for boxes that belong to no concept
// (the unsaved Teach photos), and is the palette's first color, as focuskit/viz/draw.py PALETTE[0].
"use strict";

const FALLBACK_COLOR = "#e6194b";

// COCO compressed RLE ({"size": [h, w], "counts": str}, column-major) -> Uint8Array of h*w (row-major), 1 = inside.
// The string decoding is pycocotools' rleFrString: 5 bits per character, a continuation bit, deltas from the
// count two back.
function decodeRle(rle) {
  const [h, w] = rle.size;
  const s = rle.counts;
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const out = new Uint8Array(h * w);
  let j = 0, value = 0;
  for (const n of counts) {
    if (value) for (let t = j; t < j + n; t++) out[(t % h) * w + Math.floor(t / h)] = 1;
    j += n;
    value = 1 - value;
  }
  return out;
}

// A mask as a canvas of its own size: the color at 40% where the mask is set, transparent elsewhere.
function maskCanvas(rle, color) {
  const [h, w] = rle.size;
  const bits = decodeRle(rle);
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const ctx = c.getContext("2d");
  const data = ctx.createImageData(w, h);
  const r = parseInt(color.slice(1, 3), 16), g = parseInt(color.slice(3, 5), 16), b = parseInt(color.slice(5, 7), 16);
  for (let i = 0; i < bits.length; i++) {
    if (!bits[i]) continue;
    data.data[4 * i] = r; data.data[4 * i + 1] = g; data.data[4 * i + 2] = b; data.data[4 * i + 3] = 102;
  }
  ctx.putImageData(data, 0, 0);
  return c;
}

// A canvas showing `img` scaled to fit `maxSide`, with `items` drawn: {box: [x1,y1,x2,y2] in image pixels,
// label, color, mask (RLE), dashed}. Returns {canvas, scale, draw(extra)}; `extra` is a box being dragged.
function imageCanvas(img, items = [], maxSide = 320) {
  const scale = Math.min(1, maxSide / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  canvas.dataset.colors = [...new Set(items.filter((it) => it && it.box).map((it) => it.color || FALLBACK_COLOR))].join(" ");
  const masks = items.map((it) => (it && it.mask ? maskCanvas(it.mask, it.color || FALLBACK_COLOR) : null));
  const draw = (extra = null) => {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    masks.forEach((m) => { if (m) ctx.drawImage(m, 0, 0, canvas.width, canvas.height); });
    const all = extra ? [...items, { box: extra, color: FALLBACK_COLOR }] : items;
    for (const it of all) {
      if (!it || !it.box) continue;
      const b = it.box;
      const color = it.color || FALLBACK_COLOR;
      ctx.strokeStyle = color;
      ctx.lineWidth = 3;
      ctx.setLineDash(it.dashed ? [8, 5] : []);
      ctx.strokeRect(b[0] * scale, b[1] * scale, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);
      ctx.setLineDash([]);
      if (it.label) {
        ctx.font = "13px sans-serif";
        const w = ctx.measureText(it.label).width + 6;
        ctx.fillStyle = color;
        ctx.fillRect(b[0] * scale, Math.max(0, b[1] * scale - 17), w, 17);
        ctx.fillStyle = "#fff";
        ctx.fillText(it.label, b[0] * scale + 3, Math.max(12, b[1] * scale - 4));
      }
    }
  };
  draw();
  return { canvas, scale, draw };
}

// A legend of the concepts drawn: a swatch in each one's color and its name.
function legend(entries) {
  const box = document.createElement("div");
  box.className = "legend";
  for (const { name, color } of entries) {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    item.append(swatch, name);
    item.dataset.color = color;
    box.append(item);
  }
  return box;
}
