// Entry of the medvlm viewer component: toolbar, one panel per view, the findings overlay, keys.
// All text from Python (labels, finding names) is set with textContent, never as HTML.
import { onRender, sendKey, setFrameHeight } from './streamlit.js';
import { focusEditor, listen } from './keys.js';
import { Viewer } from './viewer.js';

const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text != null) node.textContent = String(text);
  return node;
};

const root = document.getElementById('root');
const toolbar = el('div', 'toolbar');
const panels = el('div', 'panels');
const status = el('div', 'status');
root.append(toolbar, panels, status); // the key help line is on the Streamlit page, under the viewer

const state = {
  signature: null, // digests of the views now loaded
  presetToken: null, // the window preset last applied
  overlayVisible: true,
  errors: [],
  loaded: false,
  lastKey: null,
  pageKeys: false,
};
const viewer = new Viewer((length) => {
  status.textContent = `Length: ${length.value.toFixed(1)} ${length.unit}`;
});

const buttons = {};
function button(id, label, title, onClick) {
  const b = el('button', 'tb', label);
  b.type = 'button';
  b.title = title;
  b.dataset.action = id;
  b.addEventListener('click', onClick);
  toolbar.append(b);
  buttons[id] = b;
}
function markTool() {
  buttons.window.classList.toggle('on', viewer.tool === 'window');
  buttons.length.classList.toggle('on', viewer.tool === 'length');
  buttons.overlay.classList.toggle('on', state.overlayVisible);
}
function toggleOverlay() {
  state.overlayVisible = !state.overlayVisible;
  for (const o of panels.querySelectorAll('.overlay')) o.hidden = !state.overlayVisible;
  markTool();
}

const local = {
  window: () => { viewer.setTool('window'); markTool(); },
  length: () => { viewer.setTool('length'); markTool(); },
  invert: () => viewer.invert(),
  reset: () => { viewer.reset(); status.textContent = ''; },
  overlay: toggleOverlay,
  edit: () => focusEditor(),
};
button('window', 'W/L', 'Left-drag sets window/level (w)', local.window);
button('length', 'Length', 'Left-drag measures a length in mm (l)', local.length);
button('invert', 'Invert', 'Invert grey levels (i)', local.invert);
button('reset', 'Reset', 'Back to the file window, fit to view (r)', local.reset);
button('overlay', 'Findings', 'Show or hide the classifier overlay (o)', local.overlay);
markTool();

function onAction(action) {
  state.lastKey = action;
  if (local[action]) {
    local[action]();
    return true;
  }
  if (!state.keysEnabled) return false;
  sendKey(action); // next, previous, approve: Python decides (role checks, confirmation)
  return true;
}
state.pageKeys = listen(onAction);

function overlayNode(rows, title) {
  const box = el('div', 'overlay');
  box.hidden = !state.overlayVisible;
  box.append(el('div', 'overlay-title', title));
  for (const row of rows) {
    const line = el('div', 'overlay-row');
    const bar = el('span', 'bar');
    bar.style.width = `${Math.round(Math.max(0, Math.min(1, Number(row.p) || 0)) * 100)}%`;
    line.append(el('span', 'name', row.sides ? `${row.name} (${row.sides})` : row.name),
      el('span', 'p', (Number(row.p) || 0).toFixed(2)), bar);
    box.append(line);
  }
  return box;
}

async function loadViews(args) {
  const views = args.views || [];
  panels.replaceChildren();
  state.errors = [];
  state.loaded = false;
  state.digests = views.map((v) => v.digest);
  const loadList = [];
  views.forEach((view, i) => {
    const panel = el('div', 'panel');
    const element = el('div', 'viewport');
    element.oncontextmenu = (e) => e.preventDefault();
    panel.append(element, el('div', 'label', view.label));
    if (i === 0 && args.findings && args.findings.rows && args.findings.rows.length) {
      panel.append(overlayNode(args.findings.rows, args.findings.title));
    }
    panels.append(panel);
    const bytes = args[view.arg];
    loadList.push({ label: view.label, bytes, element });
  });
  const errors = await viewer.load(loadList.filter((v) => v.bytes instanceof Uint8Array));
  state.errors = errors;
  errors.forEach((err, i) => {
    if (err) panels.children[i].append(el('div', 'error', 'This image could not be decoded in the browser.'));
  });
  state.loaded = true;
}

let pending = Promise.resolve();
onRender((args) => {
  setFrameHeight(args.height || 640);
  state.keysEnabled = Boolean(args.keys);
  const views = args.views || [];
  const signature = views.map((v) => v.digest).join('|');
  pending = pending.then(async () => {
    if (signature !== state.signature) {
      state.signature = signature;
      state.presetToken = null;
      await loadViews(args);
    }
    const preset = args.preset || {};
    if (preset.token && preset.token !== state.presetToken) {
      // The first render keeps the file's own window unless a preset other than the header's is chosen.
      if (state.presetToken !== null || !preset.is_default) viewer.setWindows(preset.windows || []);
      state.presetToken = preset.token;
    }
  }).catch((err) => {
    status.textContent = 'The viewer failed to start.';
    state.errors = [String(err && err.message || err)];
    state.loaded = true;
  });
});

new ResizeObserver(() => viewer.resize()).observe(panels);

// Read-only hook for tests and debugging: the viewports' state, nothing that changes it.
window.__medvlmViewer = {
  getState: () => ({
    loaded: state.loaded,
    digests: state.digests || [],
    errors: state.errors,
    tool: viewer.tool,
    overlayVisible: state.overlayVisible,
    pageKeys: state.pageKeys,
    lastKey: state.lastKey,
    lastLength: viewer.lastLength,
    viewports: viewer.state(),
  }),
  imageToClient: (i, point) => viewer.imageToClient(i, point),
  meanGrey: (i) => viewer.meanGrey(i),
};
