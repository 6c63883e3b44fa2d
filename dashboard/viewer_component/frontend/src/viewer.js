// Cornerstone3D: one stack viewport per view, fed from the DICOM file bytes that Python passed in.
import {
  Enums as CoreEnums,
  RenderingEngine,
  eventTarget,
  init as coreInit,
  metaData,
  utilities as coreUtils,
} from '@cornerstonejs/core';
import {
  Enums as ToolEnums,
  LengthTool,
  PanTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  annotation,
  init as toolsInit,
} from '@cornerstonejs/tools';
import dicomImageLoaderInit from '../node_modules/@cornerstonejs/dicom-image-loader/dist/esm/init.js';
import fileManager from '../node_modules/@cornerstonejs/dicom-image-loader/dist/esm/imageLoader/wadouri/fileManager.js';

const ENGINE_ID = 'medvlm-engine';
const GROUP_ID = 'medvlm-tools';
const { MouseBindings } = ToolEnums;

let ready = null;

// dicom-image-loader 5.14 reads a Part 10 file's VOI LUT Function (0028,1056) as a string but
// createImage takes element [0] of it, as from DICOMweb JSON: "LINEAR" becomes "L", an invalid
// function, and the file's own window is dropped. This provider hands the value on as a list.
function voiLutFunctionAsList() {
  let inside = false;
  metaData.addProvider((type, imageId) => {
    if (type !== 'voiLutModule' || inside) return undefined;
    inside = true;
    try {
      const module = metaData.get(type, imageId);
      if (module && typeof module.voiLUTFunction === 'string') {
        return { ...module, voiLUTFunction: [module.voiLUTFunction] };
      }
      return undefined;
    } finally {
      inside = false;
    }
  }, 100000);
}

export function initCornerstone() {
  if (ready) return ready;
  ready = (async () => {
    await coreInit();
    voiLutFunctionAsList();
    // Decoders run in a module worker built next to this bundle; codecs fetch their .wasm from wasm/.
    dicomImageLoaderInit({ maxWebWorkers: 1, wasmBasePath: new URL('./wasm/', import.meta.url).href });
    await toolsInit();
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, LengthTool]) addTool(tool);
    const group = ToolGroupManager.createToolGroup(GROUP_ID);
    for (const tool of [WindowLevelTool, PanTool, ZoomTool, LengthTool]) group.addTool(tool.toolName);
    group.setToolActive(PanTool.toolName, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(ZoomTool.toolName, {
      bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel }],
    });
    group.setToolPassive(LengthTool.toolName);
    group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    return group;
  })();
  return ready;
}

export class Viewer {
  constructor(onLength) {
    this.engine = null;
    this.viewports = []; // {id, element, imageId, label}
    this.tool = 'window';
    this.lastLength = null;
    this.onLength = onLength;
    eventTarget.addEventListener(ToolEnums.Events.ANNOTATION_COMPLETED, (e) => this._measured(e));
    eventTarget.addEventListener(ToolEnums.Events.ANNOTATION_MODIFIED, (e) => this._measured(e));
  }

  _measured(event) {
    const ann = event.detail && event.detail.annotation;
    if (!ann || ann.metadata.toolName !== LengthTool.toolName) return;
    const stats = Object.values(ann.data.cachedStats || {})[0];
    if (!stats || stats.length == null) return;
    this.lastLength = { value: stats.length, unit: stats.unit };
    if (this.onLength) this.onLength(this.lastLength);
  }

  // views: [{label, bytes (Uint8Array), element}] -> loads every view; resolves when all rendered.
  async load(views) {
    const group = await initCornerstone();
    this.destroy();
    this.engine = new RenderingEngine(ENGINE_ID);
    this.viewports = views.map((v, i) => ({ id: `vp${i}`, element: v.element, label: v.label, imageId: null }));
    this.engine.setViewports(this.viewports.map((v) => ({
      viewportId: v.id, type: CoreEnums.ViewportType.STACK, element: v.element,
      defaultOptions: { background: [0, 0, 0] },
    })));
    for (const v of this.viewports) group.addViewport(v.id, ENGINE_ID);
    const results = await Promise.allSettled(views.map(async (view, i) => {
      const vp = this.engine.getViewport(this.viewports[i].id);
      const imageId = fileManager.add(new Blob([view.bytes], { type: 'application/dicom' }));
      this.viewports[i].imageId = imageId;
      await vp.setStack([imageId], 0); // VOI starts at the file's own window (or its pixel range)
      vp.render();
    }));
    return results.map((r) => (r.status === 'fulfilled' ? null : String(r.reason && r.reason.message || r.reason)));
  }

  destroy() {
    if (!this.engine) return;
    const group = ToolGroupManager.getToolGroup(GROUP_ID);
    for (const v of this.viewports) group && group.removeViewports(ENGINE_ID, v.id);
    annotation.state.removeAllAnnotations();
    this.engine.destroy();
    this.engine = null;
    this.viewports = [];
  }

  viewport(i) {
    return this.engine ? this.engine.getViewport(this.viewports[i].id) : null;
  }

  each(fn) {
    this.viewports.forEach((v, i) => {
      const vp = this.viewport(i);
      if (vp && v.imageId) fn(vp, i);
    });
  }

  setTool(tool) {
    const group = ToolGroupManager.getToolGroup(GROUP_ID);
    if (!group) return;
    const primary = [{ mouseButton: MouseBindings.Primary }];
    if (tool === 'length') {
      group.setToolPassive(WindowLevelTool.toolName);
      group.setToolActive(LengthTool.toolName, { bindings: primary });
    } else {
      group.setToolPassive(LengthTool.toolName);
      group.setToolActive(WindowLevelTool.toolName, { bindings: primary });
    }
    this.tool = tool;
  }

  // windows: [[centre, width] | null] per view, in modality values (DICOM linear VOI function).
  setWindows(windows) {
    this.each((vp, i) => {
      const w = windows[i];
      if (!w) return;
      const [c, width] = w;
      vp.setProperties({ voiRange: coreUtils.windowLevel.toLowHighRange(width, c) });
      vp.render();
    });
  }

  invert() {
    this.each((vp) => {
      vp.setProperties({ invert: !vp.getProperties().invert });
      vp.render();
    });
  }

  reset() {
    this.each((vp) => {
      vp.resetProperties(); // back to the file's VOI and photometric interpretation
      vp.resetCamera();
      vp.render();
    });
    annotation.state.removeAllAnnotations();
    this.lastLength = null;
  }

  resize() {
    if (this.engine) this.engine.resize(true, true);
  }

  state() {
    const out = [];
    this.viewports.forEach((v, i) => {
      const vp = this.viewport(i);
      if (!vp || !v.imageId) {
        out.push({ label: v.label, loaded: false });
        return;
      }
      const props = vp.getProperties();
      const plane = metaData.get('imagePlaneModule', v.imageId) || {};
      const pixel = metaData.get('imagePixelModule', v.imageId) || {};
      out.push({
        label: v.label,
        loaded: true,
        cpu: Boolean(vp.useCPURendering),
        voi: props.voiRange ? { lower: props.voiRange.lower, upper: props.voiRange.upper } : null,
        invert: Boolean(props.invert),
        zoom: vp.getZoom(),
        pan: vp.getPan(),
        photometric: pixel.photometricInterpretation || null,
        bitsStored: pixel.bitsStored || null,
        rows: plane.rows || null,
        columns: plane.columns || null,
        pixelSpacing: plane.pixelSpacing || null,
      });
    });
    return out;
  }

  // Image pixel (column, row) -> client coordinates in this document (for tests and the overlay).
  imageToClient(i, point) {
    const vp = this.viewport(i);
    const v = this.viewports[i];
    const world = coreUtils.imageToWorldCoords(v.imageId, point);
    const [x, y] = vp.worldToCanvas(world);
    const rect = v.element.getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  }

  // Mean grey level (0-255) of the central quarter of a viewport's canvas, as displayed.
  meanGrey(i) {
    const vp = this.viewport(i);
    const canvas = vp && vp.getCanvas();
    const ctx = canvas && canvas.getContext('2d');
    if (!ctx) return null;
    const w = canvas.width;
    const h = canvas.height;
    const data = ctx.getImageData(Math.floor(w / 4), Math.floor(h / 4), Math.floor(w / 2), Math.floor(h / 2)).data;
    let sum = 0;
    for (let k = 0; k < data.length; k += 4) sum += (data[k] + data[k + 1] + data[k + 2]) / 3;
    return sum / (data.length / 4);
  }
}
