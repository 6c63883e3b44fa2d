// vtk.js reads XML meshes with xmlbuilder2 (a Node-style package that needs `events`). The viewer
// never loads meshes, so the import resolves to this stub instead of bundling a Node polyfill.
export function create() {
  throw new Error('XML meshes are not supported by the medvlm viewer');
}
