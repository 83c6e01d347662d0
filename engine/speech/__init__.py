"""Speech shared by every voice of the pack (CosyVoice and the API voices), ComfyUI-free.

- :mod:`.sentences` splits a script into sentences (Chinese and English punctuation) and packs
  them into pieces under a provider's limit;
- :mod:`.types` is the common result (mono float32 samples, sample rate, per-sentence timings,
  optional character timestamps) and the streamed chunk;
- :mod:`.join` puts separately synthesised pieces together with the pauses of ``data/speech.json``
  and works out the sentence timings;
- :mod:`.pcm` decodes what voices send (16-bit PCM in any chunking, WAV, compressed formats);
- :mod:`.srt` writes (and reads back) subtitles from the timings.
"""
