// DigitalHuman media widgets: an upload button (and drag & drop) for DH_LoadVideo / DH_LoadAudio,
// a <video>/<audio> preview in DH_LoadVideo, DH_LoadAudio and DH_SaveVideo, and the notes those
// nodes return in ui.text (what was changed about the media: a retimed video, audio cut or padded,
// a downmix, a variable frame rate made constant) shown under the node.
// Uses only the classic extension API (app.registerExtension, addWidget, addDOMWidget), which both
// the 2024 frontend and today's frontend provide. Files go to ComfyUI's input folder through
// POST /upload/image, the endpoint core's image upload uses (it stores any file type).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const LOADERS = {
    DH_LoadVideo: { widget: "video", accept: "video/*,.mkv,.webm,.mov,.m4v,.avi", kind: "video" },
    DH_LoadAudio: { widget: "audio", accept: "audio/*,.flac,.m4a,.ogg,.opus", kind: "audio" },
};

function viewUrl({ filename, subfolder = "", type = "input" }) {
    const params = new URLSearchParams({ filename, subfolder, type, rand: String(Math.random()) });
    return api.apiURL(`/view?${params.toString()}`);
}

function splitName(path) {
    const cut = path.lastIndexOf("/");
    return cut < 0 ? { filename: path, subfolder: "" } : { filename: path.slice(cut + 1), subfolder: path.slice(0, cut) };
}

// One media element per node, shown below the widgets; created on first use.
function mediaPreview(node, kind) {
    if (node._dhPreview?.kind === kind) return node._dhPreview.el;
    const el = document.createElement(kind);
    Object.assign(el, { controls: true, loop: kind === "video", muted: kind === "video", preload: "metadata" });
    el.style.width = "100%";
    if (kind === "video") el.style.objectFit = "contain";
    // Preferred height from the node width and the video's aspect ratio (audio: one control bar).
    const prefHeight = () => {
        if (kind === "audio") return 54;
        const ratio = el.videoWidth ? el.videoHeight / el.videoWidth : 1;
        return Math.max(80, Math.min(768, (node.size[0] - 20) * ratio + 20));
    };
    const widget = node.addDOMWidget("dh_preview", "preview", el, {
        serialize: false,
        hideOnZoom: false,
        getValue() { return undefined; },
        setValue() {},
        getMinHeight: () => (kind === "audio" ? 54 : 80),
        getHeight: prefHeight,
    });
    widget.serializeValue = () => undefined;
    el.addEventListener("loadedmetadata", () => {
        const need = node.computeSize()[1] + prefHeight();
        if (node.size[1] < need) node.setSize([node.size[0], need]);
        app.graph.setDirtyCanvas(true, true);
    });
    node._dhPreview = { kind, el, widget };
    return el;
}

// The notes of the last run, one line each, under the node's widgets; hidden when a run has none.
function showNotes(node, lines) {
    lines = Array.isArray(lines) ? lines.filter((l) => typeof l === "string" && l) : [];
    if (!node._dhNotes && !lines.length) return;
    if (!node._dhNotes) {
        const el = document.createElement("div");
        Object.assign(el.style, {
            color: "#e8b04a", fontSize: "11px", lineHeight: "15px", whiteSpace: "pre-wrap",
            wordBreak: "break-word", padding: "2px 6px", boxSizing: "border-box", overflow: "hidden",
        });
        // Height from the text: lines wrap at the node's width (about 6.2 px per character at 11 px).
        const height = () => {
            if (!node._dhNotes?.lines.length) return 0;
            const perLine = Math.max(20, Math.floor((node.size[0] - 24) / 6.2));
            const rows = node._dhNotes.lines.reduce((n, l) => n + Math.ceil((l.length + 2) / perLine), 0);
            return rows * 15 + 6;
        };
        const widget = node.addDOMWidget("dh_notes", "notes", el, {
            serialize: false,
            hideOnZoom: false,
            getValue() { return undefined; },
            setValue() {},
            getMinHeight: height,
            getHeight: height,
        });
        widget.serializeValue = () => undefined;
        node._dhNotes = { el, widget, lines: [] };
    }
    const notes = node._dhNotes;
    notes.lines = lines;
    notes.el.textContent = lines.map((l) => `\u26a0 ${l}`).join("\n");  // text, never HTML
    notes.el.style.display = lines.length ? "block" : "none";
    const need = node.computeSize()[1];
    if (node.size[1] < need) node.setSize([node.size[0], need]);
    app.graph.setDirtyCanvas(true, true);
}

function showFile(node, kind, ref) {
    if (!ref?.filename) return;
    const el = mediaPreview(node, kind);
    el.src = viewUrl(ref);
    if (kind === "video") el.play?.().catch(() => {});
}

async function uploadFile(file) {
    const body = new FormData();
    body.append("image", file, file.name);
    const resp = await api.fetchApi("/upload/image", { method: "POST", body });
    if (resp.status !== 200) throw new Error(`upload of ${file.name} failed: ${resp.status} ${resp.statusText}`);
    const data = await resp.json();
    return data.subfolder ? `${data.subfolder}/${data.name}` : data.name;
}

function addUploader(node, spec) {
    const combo = node.widgets?.find((w) => w.name === spec.widget);
    if (!combo) return;
    const previewCurrent = () => combo.value && showFile(node, spec.kind, { ...splitName(combo.value), type: "input" });
    const origCallback = combo.callback;
    combo.callback = function () {
        previewCurrent();
        return origCallback?.apply(this, arguments);
    };
    const take = async (file) => {
        try {
            const path = await uploadFile(file);
            if (!combo.options.values.includes(path)) combo.options.values.push(path);
            combo.value = path;
            combo.callback?.(path);
        } catch (err) {
            alert(String(err));
        }
    };
    const input = document.createElement("input");
    Object.assign(input, { type: "file", accept: spec.accept, style: "display: none" });
    input.onchange = () => { if (input.files.length) take(input.files[0]); input.value = ""; };
    document.body.append(input);
    const button = node.addWidget("button", `choose ${spec.kind} to upload`, null, () => input.click());
    button.serialize = false;
    const origRemoved = node.onRemoved;
    node.onRemoved = function () {
        input.remove();
        return origRemoved?.apply(this, arguments);
    };
    node.onDragOver = (e) => !!e?.dataTransfer?.types?.includes?.("Files");
    node.onDragDrop = (e) => {
        const file = [...(e.dataTransfer?.files ?? [])].find((f) => f.type.startsWith(`${spec.kind}/`) || spec.accept.includes(f.name.slice(f.name.lastIndexOf("."))));
        if (!file) return false;
        take(file);
        return true;
    };
    requestAnimationFrame(previewCurrent);
}

app.registerExtension({
    name: "DigitalHuman.Media",
    async beforeRegisterNodeDef(nodeType, nodeData) {
        const spec = LOADERS[nodeData.name];
        if (spec) {
            const created = nodeType.prototype.onNodeCreated;
            nodeType.prototype.onNodeCreated = function () {
                const r = created?.apply(this, arguments);
                addUploader(this, spec);
                return r;
            };
        }
        if (nodeData.name === "DH_LoadVideo") {
            const executed = nodeType.prototype.onExecuted;
            nodeType.prototype.onExecuted = function (message) {
                const r = executed?.apply(this, arguments);
                showNotes(this, message?.text);
                return r;
            };
        }
        if (nodeData.name === "DH_SaveVideo") {
            const executed = nodeType.prototype.onExecuted;
            nodeType.prototype.onExecuted = function (message) {
                const video = message?.video?.[0];
                if (video) {
                    // The MP4 is listed under "images" for API clients; an <img> cannot show it, so the
                    // node shows one <video> instead of a broken image preview.
                    delete message.images;
                    delete message.animated;
                    this.imgs = undefined;
                }
                const r = executed?.apply(this, arguments);
                if (video) showFile(this, "video", video);
                showNotes(this, message?.text);
                return r;
            };
        }
    },
});
