"""The study viewer: Cornerstone3D (``@cornerstonejs/core``, ``tools``, ``dicom-image-loader``) in a
Streamlit custom component (components v1).

The frontend's sources are in ``frontend/`` (``package.json`` + ``package-lock.json``, exact
versions); ``npm ci && npm run build`` writes ``build/``, which is committed and ships in the Python
package, so running the dashboard needs no Node.js. ``.ci/check_viewer_bundle.sh`` rebuilds it and
fails when the committed build differs from what the sources make.

- ``payload``: which files a study's viewer shows and the component's arguments (no Streamlit).
- ``shortcuts``: the study-level keys the component reports (no Streamlit).
- ``panel``: draws the viewer on the study page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUILD_DIR = Path(__file__).resolve().parent / "build"
"""The committed build: index.html, viewer.js, decodeImageFrameWorker.js, viewer.css, wasm/."""
COMPONENT_NAME = "medvlm_viewer"


def viewer_component(args: dict[str, Any], *, key: str) -> Any:
    """Place the viewer; returns the last key event it reported (``{"key", "nonce"}``) or None.

    Args:
        args: ``payload.component_args(...)``.
        key: the Streamlit element key.
    """
    import streamlit.components.v1 as components

    component = components.declare_component(COMPONENT_NAME, path=str(BUILD_DIR))
    return component(key=key, default=None, **args)
