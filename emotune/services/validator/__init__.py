"""emotune validator service: scores generated samples and keeps the good ones.

Every sample is checked by rules (length, empty/truncated, language, artefacts such as "当前祝福语如下" or a leading
"！啦~", leftover role tags, refusals, style markers) and by embeddings (similarity to its style's reference texts,
closeness to another style, near-duplicates within the style). The kept set and the rejected samples (with reason
codes) are published as artifacts with a report (JSON + PNG plots) that includes a style separability figure.
``Score`` rates arbitrary texts online (the pipeline compares the base and the tuned model with it).
"""
