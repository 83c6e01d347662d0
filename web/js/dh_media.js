// DigitalHuman media widgets: an upload button (and drag & drop) for DH_LoadVideo / DH_LoadAudio,
// and a <video>/<audio> preview in DH_LoadVideo, DH_LoadAudio and DH_SaveVideo.
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
                return r;
            };
        }
    },
});
