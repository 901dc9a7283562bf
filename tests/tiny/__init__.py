"""Test scaffolding: tiny random-weight models with locally trained tokenizers, built at
test time and loaded through the real from_pretrained path (`causal`: GPT-2 and Llama
chat models; `models`: seq2seq, vision and BERT models; `moderation`: a toxicity
classifier and a Llama Guard-style judge). Used by the tests and the benchmarks only:
no production module imports it."""
