// Media transports of the providers' streaming avatars (LiveAvatar, HeyGen, D-ID) for the live
// panel: registered with client.js's registerTransport, so their sessions play in the same panel
// and standalone page as ours. A pure module: importing it only registers the two connectors.
//
// The page never sees an API key. Every step goes to our routes (/s/{id}/connect with a "step"):
// "join" gives a viewer id and what this page needs, minted by the server: a LiveKit URL and the
// provider's short-lived client token, or D-ID's WebRTC offer and ICE servers; the page sends back
// its WebRTC answer, its ICE candidates and the provider's data-channel events, which the server
// relays with the key. Keep-alives ("ping") tell the server a page still watches; "leave" (also
// sent as a beacon when the page goes away) lets it stop the session, so nothing bills unwatched.
//
// livekit: the LiveKit client (vendored from npm in ../vendor, loaded only when needed) joins the
// provider's room; for LiveAvatar FULL mode this page also publishes the session's commands
// (avatar.speak_text, ...) into the room when the server addresses them to its viewer id.
// did-webrtc: a plain RTCPeerConnection answers D-ID's offer.
import { pcStats, registerTransport } from "./client.js";

const VENDOR_LIVEKIT = "/static/vendor/livekit-client.esm.mjs";

function stepper(client, session) {
    const url = `/s/${encodeURIComponent(session.id)}/connect`;
    let viewer = null;
    const send = (body) => client.post(url, viewer ? { viewer, ...body } : body);
    const quiet = (body) => send(body).catch(() => {});
    return {
        async join() { const r = await send({ step: "join" }); viewer = r.viewer; return r; },
        send,
        quiet,
        get viewer() { return viewer; },
        keepAlive(onState) {
            const timer = setInterval(async () => {
                try {
                    const r = await send({ step: "ping" });
                    onState?.(r);
                } catch (err) { onState?.({ error: err }); }
            }, 5000);
            const closeUrl = client.base + url;
            const onHide = () => navigator.sendBeacon?.(closeUrl, new Blob([JSON.stringify({ step: "leave", viewer })], { type: "text/plain" }));
            window.addEventListener("pagehide", onHide);
            return () => { clearInterval(timer); window.removeEventListener("pagehide", onHide); };
        },
        leave() { if (viewer) quiet({ step: "leave" }); },
    };
}

// -- LiveKit (LiveAvatar, HeyGen v2) ----------------------------------------------------------
registerTransport("livekit", async (client, session, video) => {
    const steps = stepper(client, session);
    const join = await steps.join();
    let LK;
    try {
        LK = await import(client.base + VENDOR_LIVEKIT);
    } catch (err) {
        steps.leave();
        throw new Error(`the LiveKit client could not be loaded (${err.message})`);
    }
    const room = new LK.Room({ adaptiveStream: false, dynacast: false });
    const stream = new MediaStream();
    let state = "connecting";
    room.on(LK.RoomEvent.TrackSubscribed, (track) => {
        if (track.kind === "video" || track.kind === "audio") {
            stream.addTrack(track.mediaStreamTrack);
            if (video.srcObject !== stream) video.srcObject = stream;
        }
    });
    room.on(LK.RoomEvent.TrackUnsubscribed, (track) => { if (track.mediaStreamTrack) stream.removeTrack(track.mediaStreamTrack); });
    room.on(LK.RoomEvent.DataReceived, (payload, participant, kind, topic) => {
        if (join.response_topic && topic && topic !== join.response_topic) return;
        let data;
        try { data = JSON.parse(new TextDecoder().decode(payload)); } catch (e) { return; }
        if (data && typeof data === "object") steps.quiet({ step: "event", event: String(data.event_type || data.type || ""), data });
    });
    room.on(LK.RoomEvent.Disconnected, () => {
        if (state === "closed") return;
        state = "failed";
        steps.quiet({ step: "event", event: "room", data: { state: "disconnected" } });
    });
    const stopPings = steps.keepAlive();
    try {
        await room.connect(join.livekit_url, join.token);
    } catch (err) {
        stopPings();
        state = "closed";
        steps.leave();
        throw new Error(`could not join the provider's LiveKit room: ${err.message || err}`);
    }
    state = "connected";
    steps.quiet({ step: "event", event: "room", data: { state: "connected" } });
    const encoder = new TextEncoder();
    return {
        kind: "livekit",
        room,
        viewer: steps.viewer,
        onEvent(ev) {
            // FULL mode's commands, addressed to this page's viewer: publish them into the room
            if (ev.type !== "command" || ev.transport !== "livekit" || ev.viewer !== steps.viewer) return;
            room.localParticipant.publishData(encoder.encode(JSON.stringify(ev.payload)), { reliable: true, topic: ev.topic })
                .catch((err) => steps.quiet({ step: "event", event: "relay-failed", data: { message: String(err.message || err) } }));
        },
        close() {
            if (state === "closed") return;
            state = "closed";
            stopPings();
            steps.leave();
            room.disconnect();
            video.srcObject = null;
        },
        stats: () => pcStats(room.engine?.pcManager?.subscriber?._pc || room.engine?.pcManager?.subscriber?.pc),
        state: () => state,
    };
});

// -- D-ID Talks Streams: D-ID offers, this page answers ----------------------------------------
registerTransport("did-webrtc", async (client, session, video) => {
    const steps = stepper(client, session);
    const join = await steps.join();
    const pc = new RTCPeerConnection({ iceServers: join.ice_servers || [] });
    const stream = new MediaStream();
    pc.addEventListener("track", (ev) => {
        stream.addTrack(ev.track);
        if (video.srcObject !== stream) video.srcObject = stream;
    });
    const relay = (m) => steps.quiet({ step: "event", event: String(m.data).slice(0, 2000) });
    pc.addEventListener("datachannel", (ev) => ev.channel.addEventListener("message", relay));
    // D-ID's own example opens this channel from the page too; events may arrive on either
    pc.createDataChannel("JanusDataChannel").addEventListener("message", relay);
    pc.addEventListener("connectionstatechange", () => {
        // D-ID's talks are sent once this page says its connection is up (they would play unseen before)
        if (["connected", "failed", "closed"].includes(pc.connectionState)) {
            steps.quiet({ step: "event", event: "room", data: { state: pc.connectionState } });
        }
    });
    let answered = false;
    const early = [];
    pc.addEventListener("icecandidate", (ev) => {
        const c = ev.candidate;
        const body = c && c.candidate ? { step: "ice", candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex }
            : { step: "ice" };
        if (answered) steps.quiet(body); else early.push(body);
    });
    try {
        await pc.setRemoteDescription(join.offer);
        const answer = await pc.createAnswer();
        await pc.setLocalDescription(answer);
        await steps.send({ step: "answer", answer: { type: answer.type, sdp: answer.sdp } });
    } catch (err) {
        pc.close();
        steps.leave();
        throw err;
    }
    answered = true;
    for (const body of early.splice(0)) steps.quiet(body);
    const stopPings = steps.keepAlive();
    let closed = false;
    return {
        kind: "did-webrtc",
        pc,
        viewer: steps.viewer,
        close() {
            if (closed) return;
            closed = true;
            stopPings();
            steps.leave();
            pc.close();
            video.srcObject = null;
        },
        stats: () => pcStats(pc),
        state: () => (closed ? "closed" : pc.connectionState),
    };
});
