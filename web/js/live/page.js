// The standalone page of a live session (served by ComfyUI at /digitalhuman/live/page#s=<id>).
// ComfyUI's frontend also imports every .js file of the extension folder, this one included: there
// it finds no #dh-live element and does nothing.
import { mountPanel } from "./panel.js";

const root = document.getElementById("dh-live");
if (root) {
    const base = location.pathname.replace(/\/page\/?$/, "");
    const params = new URLSearchParams(location.hash.slice(1));
    window.dhLive = mountPanel(root, { base, sessionId: params.get("s"), title: true });
}
