"""CosyVoice 2 (FunAudioLLM, Apache-2.0): text-speech language model, flow-matching decoder and
HiFT vocoder, written for this pack and loading the published ``llm.pt``, ``flow.pt``, ``hift.pt``
unchanged. Hyper-parameters live in ``cosyvoice2.json`` (read through :mod:`.config`)."""
