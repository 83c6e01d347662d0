// The live panel: session picker, video with sound, text box, mode switch (repeat / chat / audio),
// Stop, latency and fps display, transcript and problems. Mounted into ComfyUI's sidebar tab or
// floating panel (dh_live.js) and into the standalone page (page.js). A pure module: nothing happens
// until mountPanel() is called. Every text from the server goes in with textContent, never as HTML.
import { ChangeDetector, LiveClient } from "./client.js";
import "./provider_transports.js";  // LiveKit rooms (LiveAvatar, HeyGen) and D-ID's WebRTC offer

const CSS = `
.dhl { font: 13px/1.4 system-ui, sans-serif; color: #ddd; display: flex; flex-direction: column; gap: 6px; padding: 6px; box-sizing: border-box; height: 100%; }
.dhl * { box-sizing: border-box; }
.dhl-row { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
.dhl select, .dhl textarea, .dhl button, .dhl input { font: inherit; color: #eee; background: #2a2a2a; border: 1px solid #555; border-radius: 4px; }
.dhl button { padding: 3px 10px; cursor: pointer; }
.dhl button:disabled { opacity: .45; cursor: default; }
.dhl button.dhl-on { background: #3a5f8f; border-color: #6b9bd1; }
.dhl-stop { background: #7a2b2b !important; }
.dhl-video { width: 100%; background: #000; border-radius: 4px; aspect-ratio: 1 / 1; object-fit: contain; max-height: 60vh; }
.dhl textarea { width: 100%; min-height: 52px; resize: vertical; padding: 4px; }
.dhl-state { padding: 1px 6px; border-radius: 8px; background: #444; font-size: 11px; }
.dhl-state[data-state=speaking] { background: #2f6b3a; }
.dhl-state[data-state=interrupted] { background: #7a5b20; }
.dhl-state[data-state=closed] { background: #6b2f2f; }
.dhl-lat { font: 11px/1.3 ui-monospace, monospace; color: #aaa; white-space: pre-wrap; }
.dhl-log { flex: 1; min-height: 60px; overflow-y: auto; font-size: 12px; border-top: 1px solid #444; padding-top: 4px; }
.dhl-log div { margin: 2px 0; word-break: break-word; }
.dhl-user { color: #9cc3ff; } .dhl-avatar { color: #ddd; } .dhl-error { color: #ff8a80; } .dhl-info { color: #999; }
.dhl-msg { color: #ffcc80; font-size: 12px; min-height: 1em; }
.dhl-unmute { position: absolute; inset: auto 8px 8px auto; }
.dhl-stage { position: relative; }
`;

function injectCss() {
    if (document.getElementById("dhl-css")) return;
    const el = document.createElement("style");
    el.id = "dhl-css";
    el.textContent = CSS;
    document.head.append(el);
}

function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
        if (k === "class") el.className = v;
        else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
        else if (v !== undefined && v !== null) el.setAttribute(k, v);
    }
    for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
}

const MODES = ["repeat", "chat", "audio"];

export function mountPanel(root, { base, sessionId = null, title = true } = {}) {
    injectCss();
    const client = new LiveClient(base);
    const state = { sessions: [], session: null, media: null, unfollow: null, mode: "repeat", sentAt: null,
                    lat: {}, latTurn: null, closed: false, recording: null, reconnectTimer: null };

    const picker = h("select", { "aria-label": "session", class: "dhl-picker" });
    const badge = h("span", { class: "dhl-state", "data-state": "idle" }, "no session");
    const video = h("video", { class: "dhl-video", autoplay: "", playsinline: "" });
    const unmute = h("button", { class: "dhl-unmute", style: "display:none", onclick: () => { video.muted = false; video.play().catch(() => {}); unmute.style.display = "none"; } }, "\u{1F50A} sound");
    const stage = h("div", { class: "dhl-stage" }, video, unmute);
    const modeButtons = MODES.map((m) => h("button", { "data-mode": m, onclick: () => setMode(m) }, m));
    const text = h("textarea", { placeholder: "Type what the avatar says (Enter sends, Shift+Enter: new line)", "aria-label": "message" });
    const send = h("button", { class: "dhl-send", onclick: () => submit() }, "Send");
    const stopBtn = h("button", { class: "dhl-stop", onclick: () => stop() }, "Stop");
    const file = h("input", { type: "file", accept: "audio/*,video/webm,.wav,.mp3,.m4a,.ogg,.flac,.webm", style: "display:none" });
    const upload = h("button", { class: "dhl-upload", onclick: () => file.click() }, "Upload clip");
    const record = h("button", { class: "dhl-record", onclick: () => toggleRecord() }, "\u25CF Record");
    const audioRow = h("div", { class: "dhl-row", style: "display:none" }, upload, record, file);
    const msg = h("div", { class: "dhl-msg", role: "status" });
    const lat = h("div", { class: "dhl-lat" }, "latency: -");
    const log = h("div", { class: "dhl-log", "aria-label": "transcript" });
    root.replaceChildren(h("div", { class: "dhl" },
        title ? h("div", { class: "dhl-row" }, h("strong", {}, "Live"), picker, badge) : h("div", { class: "dhl-row" }, picker, badge),
        stage, h("div", { class: "dhl-row" }, ...modeButtons, stopBtn), text, h("div", { class: "dhl-row" }, send), audioRow,
        msg, lat, log));
    const detector = new ChangeDetector(video);

    function note(kind, line) {
        const el = h("div", { class: `dhl-${kind}` }, line);
        log.append(el);
        while (log.childElementCount > 200) log.firstElementChild.remove();
        log.scrollTop = log.scrollHeight;
        return el;
    }
    function problem(line) { msg.textContent = line; note("error", line); }
    function setBadge(s) { badge.textContent = s; badge.dataset.state = s; }

    function setMode(m) {
        state.mode = m;
        for (const b of modeButtons) b.classList.toggle("dhl-on", b.dataset.mode === m);
        const audio = m === "audio";
        text.style.display = audio ? "none" : "";
        send.style.display = audio ? "none" : "";
        audioRow.style.display = audio ? "" : "none";
    }
    function applyModes(modes) {
        for (const b of modeButtons) b.disabled = !modes.includes(b.dataset.mode);
        if (!modes.includes(state.mode)) setMode(modes[0] || "audio");
    }

    async function refresh() {
        try {
            const r = await client.sessions();
            state.sessions = r.sessions;
            state.ice = r.ice_servers || [];
            const current = state.session?.id;
            picker.replaceChildren(...(r.sessions.length ? r.sessions.map((s) => h("option", { value: s.id }, `${s.name || s.id.slice(0, 6)} (${s.kind})`))
                                                           : [h("option", { value: "" }, "no live session")]));
            const want = sessionId || current || r.sessions[0]?.id;
            if (want && r.sessions.some((s) => s.id === want)) picker.value = want;
            if (!r.sessions.length) {
                setBadge("no session");
                msg.textContent = sessionId ? "This live session has ended." : "No live session: queue a workflow with a Live Session node.";
            }
            const pick = r.sessions.find((s) => s.id === picker.value);
            if (pick && pick.id !== current) await open(pick);
            else if (pick) applyModes(pick.modes);
            else if (state.session && !pick) await closeMedia();
        } catch (err) {
            msg.textContent = `cannot reach the live routes: ${err.message}`;
        }
    }

    async function closeMedia() {
        state.media?.close();
        state.media = null;
        state.unfollow?.();
        state.unfollow = null;
        state.session = null;
    }

    async function open(session) {
        await closeMedia();
        state.session = session;
        applyModes(session.modes);
        setBadge(session.state || "idle");
        msg.textContent = "connecting...";
        state.unfollow = client.follow(session.id, onEvent, (err) => { msg.textContent = `events: ${err.message}`; });
        try {
            state.media = await client.connect({ ...session, ice_servers: state.ice }, video);
            msg.textContent = "";
            playWithSound();
            detector.start();
            watchConnection();
        } catch (err) {
            problem(`could not connect the video: ${err.message}`);
        }
    }

    function playWithSound() {
        video.muted = false;
        video.play().catch(() => {  // autoplay with sound refused until the user clicks
            video.muted = true;
            video.play().catch(() => {});
            unmute.style.display = "";
        });
    }

    function watchConnection() {
        const media = state.media;
        if (!media?.state) return;
        const check = () => {
            if (state.media !== media || state.closed) return;
            const st = media.state();
            if (st === "failed" || st === "closed") {
                note("info", "video connection lost; reconnecting...");
                state.session = null;
                state.media = null;
                clearTimeout(state.reconnectTimer);
                state.reconnectTimer = setTimeout(() => refresh(), 1000);
                return;
            }
            setTimeout(check, 1000);
        };
        setTimeout(check, 1000);
    }

    function onEvent(ev) {
        state.media?.onEvent?.(ev);  // a provider's transport acts on its own events (LiveAvatar FULL's commands)
        switch (ev.type) {
            case "state": setBadge(ev.state); if (ev.state === "closed") { note("info", "the session ended"); closeMedia().then(() => setTimeout(refresh, 1500)); } break;
            case "turn": note("user", `${ev.mode === "audio" ? "\u{1F3A4}" : "you"}: ${ev.text}`); state.answerEl = null; break;
            case "answer":
                if (!state.answerEl) state.answerEl = note("info", "");
                state.answerEl.textContent += ev.delta;
                break;
            case "said": note("avatar", `avatar: ${ev.text}`); break;
            case "interrupted": note("info", `stopped (${ev.by})`); break;
            case "error": problem(`${ev.where}: ${ev.message}`); break;
            case "latency":
                state.lat = { ...state.lat, ...ev };
                showLatency();
                break;
            case "updated": if (ev.modes) applyModes(ev.modes); note("info", `updated: voice ${ev.voice || "none"}, chat ${ev.chat || "none"}`); break;
            // providers' sessions (engine/live/remote.py)
            case "started": note("info", `${ev.kind} started (stops by itself after ${ev.max_minutes} min)`); break;
            case "cost": state.cost = ev; showLatency(); if (ev.final) note("info", `cost ${money(ev)} for ${ev.minutes} min`); break;
            case "ending": note("info", `this session stops in ${Math.round(ev.in_s)} s (its max minutes)`); msg.textContent = `ends in ${Math.round(ev.in_s)} s`; break;
            case "transcript": note(ev.who === "user" ? "user" : "avatar", `${ev.who}: ${ev.text}`); break;
            case "speaking": setBadge("speaking"); break;
            case "spoken": setBadge("idle"); break;
            default: break;
        }
    }

    function money(c) { return `$${Number(c.usd).toFixed(3)}${c.estimated ? " (estimate)" : ""}`; }

    function showLatency(extra = "") {
        if (state.cost && state.session?.transport !== "webrtc-offer") {
            const c = state.cost;
            lat.textContent = `cost so far ${money(c)} \u00B7 ${c.minutes} min` + (c.ends_in_s !== undefined ? ` \u00B7 stops in ${Math.round(c.ends_in_s)} s` : "")
                + (state.statsLine ? `\n${state.statsLine}` : "");
            return;
        }
        const l = state.lat;
        const f = (v) => (v === undefined ? "-" : `${Math.round(v)} ms`);
        lat.textContent = `send\u2192first audio ${f(l.first_audio_ms)} \u00B7 \u2192first speaking frame ${f(l.first_frame_ms)} (server)`
            + (l.shown_ms !== undefined ? ` \u00B7 shown ${f(l.shown_ms)}` : "") + (extra ? `\n${extra}` : state.statsLine ? `\n${state.statsLine}` : "");
    }

    async function pollStats() {
        if (state.closed) return;
        try {
            if (state.media?.stats) {
                const s = await state.media.stats();
                let server = "";
                if (state.session) {
                    const st = await client.status(state.session.id).catch(() => null);
                    if (st) server = ` \u00B7 stalls ${st.stats.stalls} \u00B7 server fps ${st.clock_fps}`;
                }
                state.statsLine = `fps ${Math.round(s.fps || 0)} \u00B7 dropped ${s.framesDropped || 0} \u00B7 freezes ${s.freezes || 0} \u00B7 jitter buffer ${Math.round(s.jitterMs || 0)} ms${server}`;
                showLatency();
            }
        } catch (err) { /* the next poll retries */ }
        setTimeout(pollStats, 2000);
    }

    function arm() {
        state.lat = {};
        state.sentAt = performance.now();
        detector.arm((ms) => { state.lat.shown_ms = ms; showLatency(); root.dispatchEvent(new CustomEvent("dhl-shown", { detail: ms })); });
    }

    async function submit() {
        const s = state.session;
        const t = text.value;
        if (!s) { problem("no live session to talk to"); return; }
        if (!t.trim()) return;
        msg.textContent = "";
        arm();
        try {
            await client.say(s.id, t, state.mode === "chat" ? "chat" : "repeat");
            text.value = "";
        } catch (err) {
            problem(err.message);
        }
    }

    async function stop() {
        if (!state.session) return;
        try { await client.stop(state.session.id); } catch (err) { problem(err.message); }
    }

    async function sendClip(blob) {
        if (!state.session) { problem("no live session to talk to"); return; }
        arm();
        try {
            const r = await client.audio(state.session.id, blob);
            note("info", `clip sent (${r.seconds} s)`);
        } catch (err) {
            problem(`audio: ${err.message}`);
        }
    }

    async function toggleRecord() {
        if (state.recording) { state.recording.stop(); return; }
        let stream;
        try {
            if (!navigator.mediaDevices?.getUserMedia) throw Object.assign(new Error("no microphone access on this page (it needs https or localhost)"), { name: "NotSupportedError" });
            stream = await navigator.mediaDevices.getUserMedia({ audio: true });
        } catch (err) {
            const why = err.name === "NotAllowedError" ? "microphone permission refused: allow the microphone for this page, or upload a clip instead"
                : err.name === "NotFoundError" ? "no microphone found: connect one, or upload a clip instead"
                : `microphone unavailable (${err.message}); upload a clip instead`;
            problem(why);
            return;
        }
        const chunks = [];
        const rec = new MediaRecorder(stream);
        rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
        rec.onstop = () => {
            stream.getTracks().forEach((t) => t.stop());
            state.recording = null;
            record.textContent = "\u25CF Record";
            record.classList.remove("dhl-on");
            if (chunks.length) sendClip(new Blob(chunks, { type: rec.mimeType || "audio/webm" }));
        };
        rec.start();
        state.recording = rec;
        record.textContent = "\u25A0 Stop recording";
        record.classList.add("dhl-on");
    }

    file.addEventListener("change", () => { if (file.files.length) sendClip(file.files[0]); file.value = ""; });
    text.addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); } });
    picker.addEventListener("change", () => {
        const s = state.sessions.find((x) => x.id === picker.value);
        if (s && s.id !== state.session?.id) open(s);  // the one already open is not joined again
    });
    setMode("repeat");
    refresh();
    const timer = setInterval(refresh, 4000);
    pollStats();
    return {
        refresh,
        select(id) { sessionId = id; refresh(); },
        destroy() { state.closed = true; clearInterval(timer); detector.stop(); closeMedia(); },
        stats: () => state.media?.stats?.(),
        latency: () => ({ ...state.lat }),
        video,
        root,
    };
}
