// The Streamlit components v1 iframe protocol, without streamlit-component-lib (which pulls React
// and Apache Arrow): the host posts "streamlit:render" with the args (bytes args arrive as
// Uint8Array), the component answers "componentReady", "setFrameHeight" and "setComponentValue".

function send(type, data) {
  window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, '*');
}

export function onRender(callback) {
  window.addEventListener('message', (event) => {
    if (event.source !== window.parent) return; // only the page that embeds us
    const data = event.data;
    if (data && data.type === 'streamlit:render') callback(data.args || {}, data);
  });
  send('streamlit:componentReady', { apiVersion: 1 });
}

export function setFrameHeight(height) {
  send('streamlit:setFrameHeight', { height });
}

let counter = 0;

// A study-level key press for Python. The nonce makes a repeated key a new value (Streamlit keeps a
// component's last value across reruns; Python acts only on a nonce it has not handled yet).
export function sendKey(key) {
  counter += 1;
  const nonce = `${Date.now().toString(36)}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
  send('streamlit:setComponentValue', { value: { key, nonce }, dataType: 'json' });
  return nonce;
}
