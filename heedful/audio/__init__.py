"""Audio as a source: WAV reading, log-mel features and the audio encoder."""
