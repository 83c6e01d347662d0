"""Live digital humans (step 4, self-hosted), ComfyUI-free.

- :mod:`.session`: ``LiveSession`` (states idle / speaking / interrupted / closed; repeat, chat and
  audio modes; interrupt; events for the panel);
- :mod:`.text`: streamed text cut into pieces for the voice;
- :mod:`.render`: MuseTalk's real-time path batch by batch on a prepared avatar;
- :mod:`.timeline`: what is shown and heard at every frame (idle loop, placement, holds, fades,
  per-frame audio);
- :mod:`.clock`: the media clock; :mod:`.record`: the MP4 + transcript recorder;
- :mod:`.registry`: the process's sessions (ids, bounds, idle reaper); :mod:`.chat`: the chat-model
  protocol and the conversation sent to it; settings in ``data/live.json`` (:mod:`.config`);
- :mod:`.remote`: a provider's streaming avatar (LiveAvatar, HeyGen, D-ID) as a panel session, driving
  a backend of the protocol in :mod:`.backend` (the backends are in ``providers/``).
"""
