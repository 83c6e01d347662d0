// DigitalHuman live panel inside ComfyUI: a sidebar tab where the frontend has the sidebar API
// (app.extensionManager.registerSidebarTab, today's frontend), else a floating panel (the 2024
// frontend); and, on the Live Session node, the session's link once it has run.
// Everything it loads comes from this pack (./live/*.js); no script, style or font from outside.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { mountPanel } from "./live/panel.js";

let panel = null;
let floating = null;
let wanted = null;

const routesBase = () => api.apiURL("/digitalhuman/live");
const pageUrl = (link) => api.apiURL(link);

function mount(el) {
    panel?.destroy();
    panel = mountPanel(el, { base: routesBase(), sessionId: wanted });
    window.dhLive = panel;  // for tests and the browser console
    return panel;
}

function floatingPanel() {
    if (floating) return floating;
    const toggle = document.createElement("button");
    toggle.className = "dh-live-toggle";
    toggle.textContent = "\u{1F3A5} Live";
    toggle.title = "DigitalHuman live sessions";
    Object.assign(toggle.style, { position: "fixed", left: "12px", bottom: "12px", zIndex: 1000, padding: "6px 12px",
        background: "#2a2a2a", color: "#eee", border: "1px solid #666", borderRadius: "6px", cursor: "pointer" });
    const box = document.createElement("div");
    box.className = "dh-live-floating";
    Object.assign(box.style, { position: "fixed", left: "12px", bottom: "52px", width: "380px", height: "min(720px, 80vh)",
        zIndex: 1000, background: "#1e1e1e", border: "1px solid #555", borderRadius: "8px", display: "none",
        boxShadow: "0 4px 18px rgba(0,0,0,.5)", overflow: "hidden" });
    const bar = document.createElement("div");
    Object.assign(bar.style, { cursor: "move", height: "10px", background: "#333" });
    const body = document.createElement("div");
    Object.assign(body.style, { height: "calc(100% - 10px)" });
    box.append(bar, body);
    let drag = null;
    bar.addEventListener("pointerdown", (e) => { drag = { x: e.clientX - box.offsetLeft, y: e.clientY - box.offsetTop }; bar.setPointerCapture(e.pointerId); });
    bar.addEventListener("pointermove", (e) => {
        if (!drag) return;
        Object.assign(box.style, { left: `${e.clientX - drag.x}px`, top: `${e.clientY - drag.y}px`, bottom: "auto" });
    });
    bar.addEventListener("pointerup", () => { drag = null; });
    toggle.addEventListener("click", () => {
        const open = box.style.display === "none";
        box.style.display = open ? "block" : "none";
        if (open) mount(body);
        else { panel?.destroy(); panel = null; }
    });
    document.body.append(toggle, box);
    floating = { toggle, box, body, open: () => { if (box.style.display === "none") toggle.click(); } };
    return floating;
}

function showLink(node, info) {
    if (!info?.link) return;
    if (!node._dhLive) {
        const el = document.createElement("div");
        Object.assign(el.style, { fontSize: "12px", padding: "2px 6px", wordBreak: "break-all" });
        const a = document.createElement("a");
        a.target = "_blank";
        a.rel = "noopener";
        a.style.color = "#8ab4f8";
        const open = document.createElement("button");
        open.textContent = "open in the Live panel";
        Object.assign(open.style, { marginLeft: "6px", fontSize: "11px" });
        open.addEventListener("click", () => openPanel(node._dhLive.id));
        el.append(a, open);
        const widget = node.addDOMWidget("dh_live_link", "link", el, {
            serialize: false, hideOnZoom: false, getValue() { return undefined; }, setValue() {},
            getMinHeight: () => 40, getHeight: () => 40,
        });
        widget.serializeValue = () => undefined;
        node._dhLive = { el, a, widget };
    }
    node._dhLive.id = info.id;
    node._dhLive.a.href = pageUrl(info.link);
    node._dhLive.a.textContent = `\u{1F3A5} ${info.name}: standalone page`;
    const need = node.computeSize()[1];
    if (node.size[1] < need) node.setSize([node.size[0], need]);
    app.graph.setDirtyCanvas(true, true);
}

function openPanel(id) {
    wanted = id;
    if (floating) { floating.open(); panel?.select(id); return; }
    if (panel) { panel.select(id); }
    const em = app.extensionManager;
    if (em?.sidebarTab?.activeSidebarTabId !== "dh-live") em?.command?.execute?.("Workspace.ToggleSidebarTab.dh-live");
}

app.registerExtension({
    name: "DigitalHuman.Live",
    async setup() {
        const em = app.extensionManager;
        if (em?.registerSidebarTab) {
            em.registerSidebarTab({
                id: "dh-live", icon: "pi pi-video", title: "Live", tooltip: "DigitalHuman live sessions", type: "custom",
                render: (el) => { mount(el); },
                destroy: () => { panel?.destroy(); panel = null; },
            });
        } else {
            floatingPanel();
        }
    },
    async beforeRegisterNodeDef(nodeType, nodeData) {
        if (nodeData.name !== "DH_LiveSession" && nodeData.name !== "DH_AvatarSessionStart") return;
        const executed = nodeType.prototype.onExecuted;
        nodeType.prototype.onExecuted = function (message) {
            const r = executed?.apply(this, arguments);
            const info = message?.dh_live?.[0];
            if (info) {
                showLink(this, info);
                panel?.refresh();
            }
            return r;
        };
    },
});
