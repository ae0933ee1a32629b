"""mmkeras.web: a static site that runs a bundle in the browser (LiteRT.js + tokenizers.js).

- `site_builder`: `build_site` (bundle folder -> site folder, JavaScript
  packages installed from the npm registry into a cache, then copied).
- `site/`: the page, its script and the browser preprocessing (the same
  tokenization framing, Pillow's resize and alpha compositing as the Python runtime).

TensorFlow-free: it runs with the base install.

Example:
>>> from mmkeras.web.site_builder import build_site  # doctest: +SKIP
>>> build_site("bundles/demo", "sites/demo")["size_bytes"]  # doctest: +SKIP
19312640
"""
