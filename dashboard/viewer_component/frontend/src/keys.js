// Keyboard shortcuts. Keys pressed while the viewer (iframe) has focus arrive here directly; keys
// pressed on the Streamlit page itself are heard by listening on the parent document, which works
// because Streamlit serves the component from its own origin (iframe sandbox has allow-same-origin).
// If the page were on another origin that listener is refused, and only keys inside the viewer work.

export const KEYMAP = {
  n: 'next', j: 'next',
  p: 'previous', k: 'previous',
  a: 'approve',
  e: 'edit',
  o: 'overlay',
  i: 'invert',
  r: 'reset',
  l: 'length',
  w: 'window',
};

function typing(target) {
  if (!target || !target.tagName) return false;
  const tag = target.tagName.toLowerCase();
  return tag === 'input' || tag === 'textarea' || tag === 'select' || target.isContentEditable;
}

export function actionFor(event) {
  // defaultPrevented is not checked: Cornerstone's own key listener on a focused viewport cancels
  // every key it sees, shortcuts included.
  if (event.repeat || event.ctrlKey || event.metaKey || event.altKey) return null;
  if (typing(event.target)) return null; // never steal keys from the report editor or a form field
  return KEYMAP[event.key] || KEYMAP[(event.key || '').toLowerCase()] || null;
}

// Calls handle(action, event) for shortcut keys; returns true when the page-level listener is active.
export function listen(handle) {
  const onKey = (event) => {
    const action = actionFor(event);
    if (action && handle(action, event) !== false) {
      event.preventDefault();
      event.stopPropagation(); // Streamlit's own page keys ("r" reruns) must not also act
    }
  };
  window.addEventListener('keydown', onKey);
  let parentDoc = null;
  try {
    parentDoc = window.parent.document; // throws on another origin
  } catch (err) {
    parentDoc = null;
  }
  if (!parentDoc || parentDoc === document) return false;
  const onParentKey = (event) => {
    // A replaced iframe must not keep acting: drop the listener once we are out of the page.
    if (!window.frameElement || !window.frameElement.isConnected) {
      parentWin.removeEventListener('keydown', onParentKey, true);
      return;
    }
    onKey(event);
  };
  // Capture phase on the page's window: we see the key before Streamlit's listeners do.
  const parentWin = parentDoc.defaultView;
  parentWin.addEventListener('keydown', onParentKey, true);
  window.addEventListener('pagehide', () => parentWin.removeEventListener('keydown', onParentKey, true));
  return true;
}

// Focus the report editor on the Streamlit page (same origin only).
export function focusEditor() {
  try {
    const area = window.parent.document.querySelector('textarea[aria-label="FINDINGS"]');
    if (area) {
      area.focus();
      return true;
    }
  } catch (err) {
    // another origin: nothing to focus from here
  }
  return false;
}
