"""HTTP clients for the commercial APIs (OpenAI images/TTS, HeyGen, D-ID, ElevenLabs)."""
