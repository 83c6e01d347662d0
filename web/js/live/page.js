// The standalone page of a live session (served by ComfyUI at /digitalhuman/live/page#s=<id>).
import { mountPanel } from "./panel.js";

const base = location.pathname.replace(/\/page\/?$/, "");
const params = new URLSearchParams(location.hash.slice(1));
const sessionId = params.get("s");
window.dhLive = mountPanel(document.getElementById("dh-live"), { base, sessionId, title: true });
