// Small DOM helpers shared by the page's modules.

/** The element with id `id`. */
export const $ = (id) => document.getElementById(id);

/** A new `tag` element with `props` assigned and `children` appended (null/undefined skipped). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** The first 8 characters of an id (session or run). */
export function shortId(id) {
  return id ? id.slice(0, 8) : '';
}

/** An ISO date as a short local date and time. */
export function when(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

/** 12.34 -> "12.3 s"; null -> "". */
export function seconds(value) {
  return value || value === 0 ? `${Number(value).toFixed(1)} s` : '';
}

/** Elapsed seconds as m:ss, or h:mm:ss from an hour on. */
export function formatClock(s) {
  const total = Math.floor(s);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const sec = String(total % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
