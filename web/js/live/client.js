// DigitalHuman live sessions: the browser side of the routes in server/live_routes.py.
// A pure ES module (no side effects on import; ComfyUI's frontend imports every .js file of the
// extension folder), shared by the panel inside ComfyUI and the standalone page. Nothing is loaded
// from outside the pack. No key ever comes here: the routes hand out media answers and session
// events, never a provider's key.
//
// Media transports: a session says how the page gets its media ("transport" in /sessions).
// "webrtc-offer" (ours): the page sends a recvonly WebRTC offer and gets the answer. Other
// transports (a provider's LiveKit room, a provider's own WebRTC) register a connector with
// registerTransport(name, async (client, session, video) => handle), so their sessions play in
// the same panel.

const TRANSPORTS = new Map();

/** What a viewer page shows of a peer connection: received fps, drops, freezes, jitter, audio level. */
export async function pcStats(pc) {
    const out = {};
    if (!pc) return out;
    const report = await pc.getStats();
    report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
            Object.assign(out, {
                fps: s.framesPerSecond || 0, framesDecoded: s.framesDecoded || 0, framesDropped: s.framesDropped || 0,
                freezes: s.freezeCount || 0,
                jitterMs: s.jitterBufferEmittedCount ? (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount : 0,
            });
        }
        if (s.type === "inbound-rtp" && s.kind === "audio") {
            out.audioLevel = s.audioLevel || 0;
            out.audioEnergy = s.totalAudioEnergy || 0;
            out.audioPackets = s.packetsReceived || 0;
        }
    });
    out.state = pc.connectionState;
    return out;
}

export function registerTransport(name, connect) {
    TRANSPORTS.set(name, connect);
}

export class LiveClient {
    // base: URL prefix of the routes, e.g. "/digitalhuman/live" (or ComfyUI's api.apiURL of it)
    constructor(base) {
        this.base = base.replace(/\/$/, "");
    }

    async json(path, options = {}) {
        const resp = await fetch(this.base + path, options);
        let body = {};
        try {
            body = await resp.json();
        } catch (e) {
            body = { error: `${resp.status} ${resp.statusText}` };
        }
        if (!resp.ok) {
            const err = new Error(body.error || `${resp.status} ${resp.statusText}`);
            err.status = resp.status;
            throw err;
        }
        return body;
    }

    post(path, body) {
        const opts = { method: "POST" };
        if (body !== undefined) {
            opts.body = JSON.stringify(body);
            opts.headers = { "Content-Type": "application/json" };
        }
        return this.json(path, opts);
    }

    sessions() { return this.json("/sessions"); }
    status(id) { return this.json(`/s/${encodeURIComponent(id)}`); }
    say(id, text, mode) { return this.post(`/s/${encodeURIComponent(id)}/say`, { text, mode }); }
    stop(id) { return this.post(`/s/${encodeURIComponent(id)}/stop`); }
    close(id) { return this.post(`/s/${encodeURIComponent(id)}/close`); }

    async audio(id, blob) {
        return this.json(`/s/${encodeURIComponent(id)}/audio`, {
            method: "POST", body: blob, headers: { "Content-Type": blob.type || "application/octet-stream" },
        });
    }

    // Long-poll the session's events; onEvent gets each one; returns a stop() function.
    follow(id, onEvent, onError) {
        let stopped = false;
        let after = 0;
        const loop = async () => {
            while (!stopped) {
                try {
                    const r = await this.json(`/s/${encodeURIComponent(id)}/events?after=${after}&wait=10`);
                    for (const ev of r.events) {
                        if (!stopped) onEvent(ev);
                    }
                    after = r.next;
                    if (r.state === "closed") { onEvent({ type: "state", state: "closed" }); return; }
                } catch (err) {
                    if (stopped) return;
                    onError?.(err);
                    if (err.status === 404) return;
                    await new Promise((ok) => setTimeout(ok, 2000));
                }
            }
        };
        loop();
        return () => { stopped = true; };
    }

    // Connect the session's media to a <video> element; returns {close(), stats(), kind}.
    async connect(session, video) {
        const connect = TRANSPORTS.get(session.transport);
        if (!connect) throw new Error(`this page cannot show '${session.transport}' sessions`);
        return connect(this, session, video);
    }
}

function waitForIce(pc, ms) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((ok) => {
        const done = () => { pc.removeEventListener("icegatheringstatechange", check); ok(); };
        const check = () => { if (pc.iceGatheringState === "complete") done(); };
        pc.addEventListener("icegatheringstatechange", check);
        setTimeout(done, ms);
    });
}

// Our own sessions: a recvonly offer to /connect (candidates gathered first: no trickle needed),
// keep-alives while connected, a beacon to close the viewer when the page goes away.
registerTransport("webrtc-offer", async (client, session, video) => {
    const pc = new RTCPeerConnection({ iceServers: session.ice_servers || [] });
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    const stream = new MediaStream();
    pc.addEventListener("track", (ev) => {
        stream.addTrack(ev.track);
        if (video.srcObject !== stream) video.srcObject = stream;
    });
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIce(pc, 2000);
    const sid = encodeURIComponent(session.id);
    let answer;
    try {
        answer = await client.post(`/s/${sid}/connect`, { sdp: pc.localDescription.sdp, type: "offer" });
    } catch (err) {
        pc.close();
        throw err;
    }
    await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
    const viewer = encodeURIComponent(answer.viewer);
    const ping = setInterval(() => {
        client.post(`/s/${sid}/viewers/${viewer}/ping`).catch(() => {});
    }, 4000);
    const closeUrl = `${client.base}/s/${sid}/viewers/${viewer}/close`;
    const onHide = () => navigator.sendBeacon?.(closeUrl, new Blob([], { type: "application/octet-stream" }));
    window.addEventListener("pagehide", onHide);
    let closed = false;
    return {
        kind: "webrtc-offer",
        pc,
        viewer: answer.viewer,
        close() {
            if (closed) return;
            closed = true;
            clearInterval(ping);
            window.removeEventListener("pagehide", onHide);
            fetch(closeUrl, { method: "POST" }).catch(() => {});
            pc.close();
            video.srcObject = null;
        },
        stats: () => pcStats(pc),
        state: () => pc.connectionState,
    };
});

// A small detector of the first picture change after a message (the moving mouth): samples the
// picture at 32x32 on every shown frame and compares it with the last frame before the message;
// the largest cell change must stand well above what the idle picture does by itself (VP8's
// refinement of a still portrait, or a moving avatar's own motion). Gives the "shown" latency.
export class ChangeDetector {
    constructor(video) {
        this.video = video;
        this.canvas = document.createElement("canvas");
        this.canvas.width = 32;
        this.canvas.height = 32;
        this.ctx = this.canvas.getContext("2d", { willReadFrequently: true });
        this.base = null;
        this.noise = 0;
        this.armedAt = null;
        this.onChange = null;
        this.running = false;
    }

    sample() {
        const v = this.video;
        if (!v.videoWidth) return null;
        this.ctx.drawImage(v, 0, 0, 32, 32);
        return this.ctx.getImageData(0, 0, 32, 32).data;
    }

    static diff(a, b) {
        let m = 0;
        for (let i = 0; i < a.length; i += 4) {
            const d = (Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2])) / 3;
            if (d > m) m = d;
        }
        return m;
    }

    start() {
        if (this.running || !this.video.requestVideoFrameCallback) return;
        this.running = true;
        const step = () => {
            if (!this.running) return;
            const px = this.sample();
            if (px) {
                if (this.armedAt === null) {
                    if (this.base) this.noise = Math.max(this.noise * 0.97, ChangeDetector.diff(px, this.base));
                    this.base = px;
                } else if (this.base && ChangeDetector.diff(px, this.base) > Math.max(3 * this.noise, this.noise + 15)) {
                    const t = performance.now();
                    const cb = this.onChange;
                    const since = this.armedAt;
                    this.armedAt = null;
                    this.base = px;
                    cb?.(t - since);
                }
            }
            this.video.requestVideoFrameCallback(step);
        };
        this.video.requestVideoFrameCallback(step);
    }

    arm(onChange) {
        this.armedAt = performance.now();
        this.onChange = onChange;
    }

    stop() { this.running = false; }
}
